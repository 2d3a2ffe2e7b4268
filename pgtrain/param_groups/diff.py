"""Two groupings compared parameter by parameter: group, LR, weight decay, optimizer route,
frozen and fresh, summed up by group with the rules that made each difference.

A side is a `GroupingView`: what a config builds (`view_of_groups`, from the run's param groups)
or what a checkpoint recorded (`view_of_checkpoint`, from its name-keyed optimizer state, which
keeps every parameter's group and every group's hyperparameters). `diff_views` compares two.
"""

import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pgtrain.param_groups.audit import named_groups
from pgtrain.param_groups.record import ParamGroups
from pgtrain.param_groups.report import values_differ
from pgtrain.utils.checks import as_real
from pgtrain.utils.suggest import listing

__all__ = [
    "GroupingView",
    "ParamGroupDiff",
    "ParamRow",
    "diff_views",
    "view_of_checkpoint",
    "view_of_groups",
]

# What a parameter's row holds, in the order differences are told.
FIELDS = ("group", "lr", "weight_decay", "route", "fresh")


@dataclass(frozen=True)
class ParamRow:
    """One parameter on one side.

    Attributes:
        group: its group's name; None when it is frozen (in no group).
        lr: the group's configured LR (before warmup or decay), None when frozen.
        weight_decay: the group's weight decay, None when frozen.
        route: the algorithm a hybrid optimizer updates it with (``muon`` / ``adamw``), or None.
        fresh: whether the initial weights did not provide it; None when unknown.
        sources: the rules and builder steps that set its values.
    """

    group: str | None
    lr: float | None = None
    weight_decay: float | None = None
    route: str | None = None
    fresh: bool | None = None
    sources: tuple[str, ...] = ()


@dataclass
class GroupingView:
    """One side of a comparison.

    Attributes:
        label: what the side is, for the report (a config with its overrides, a checkpoint).
        rows: one per parameter, by canonical name.
        others: names the side knows but did not group (a checkpoint's model keys: frozen
            parameters and buffers); a parameter the other side has is taken as frozen here.
        base_lr: the base LR of the grouping, when known.
        base_weight_decay: its base weight decay, when known.
        lr_factor: the batch-size LR factor on every group, when known.
        optimizer: the optimizer's class name, when known.
        unfreezing: the gradual unfreezing stages in one line ("" without stages), when known.
    """

    label: str
    rows: dict[str, ParamRow]
    others: frozenset[str] = frozenset()
    base_lr: float | None = None
    base_weight_decay: float | None = None
    lr_factor: float | None = None
    optimizer: str | None = None
    unfreezing: str | None = None

    def row(self, name: str) -> ParamRow | None:
        """`name`'s row; a frozen row for a name among `others`; None when the side lacks it."""
        if name in self.rows:
            return self.rows[name]
        return ParamRow(None) if name in self.others else None


def view_of_groups(
    label: str,
    groups: ParamGroups | Sequence[Mapping[str, Any]],
    *,
    fresh: Collection[str] | None = None,
    frozen: Collection[str] = (),
    lr_factor: float | None = None,
    optimizer: str | None = None,
    unfreezing: str | None = None,
) -> GroupingView:
    """The view of built param groups (a `ParamGroups` brings its record: the rules behind each
    value and the frozen parameters). `fresh`: the parameters the initial weights did not
    provide (None: unknown)."""
    record = getattr(groups, "record", None)
    decisions = record.decisions if record is not None else {}
    rows: dict[str, ParamRow] = {}
    for gname, group, names in named_groups(list(groups)):
        lr = float(group.get("initial_lr", group.get("lr", math.nan)))
        for name in names:
            decision = decisions.get(name)
            rows[name] = ParamRow(
                gname,
                lr,
                float(group.get("weight_decay", 0.0)),
                group.get("optimizer"),
                None if fresh is None else name in fresh,
                tuple(decision.sources()) if decision is not None else (),
            )
    frozen = {*frozen, *(n for n, d in decisions.items() if d.frozen)}
    for name in frozen:
        decision = decisions.get(name)
        sources = tuple(decision.sources()) if decision is not None else ()
        rows[name] = ParamRow(None, fresh=None if fresh is None else name in fresh, sources=sources)
    return GroupingView(
        label,
        rows,
        base_lr=getattr(record, "base_lr", None),
        base_weight_decay=getattr(record, "base_weight_decay", None),
        lr_factor=lr_factor,
        optimizer=optimizer,
        unfreezing=unfreezing,
    )


def view_of_checkpoint(label: str, contents: Mapping[str, Any]) -> GroupingView | None:
    """The view a checkpoint recorded (its trainer's name-keyed optimizer state); None when it
    holds weights only."""
    trainer = contents.get("trainer")
    state = trainer.get("optimizer") if isinstance(trainer, Mapping) else None
    if not isinstance(state, Mapping) or not isinstance(state.get("groups"), Mapping):
        return None
    hparams, fresh = state.get("group_hparams") or {}, contents.get("fresh")
    fresh = set(fresh) if isinstance(fresh, list | tuple) else None
    rows, factors = {}, set()
    for name, gname in state["groups"].items():
        group = hparams.get(gname) or {}
        factors.add(group.get("lr_factor"))
        rows[name] = ParamRow(
            gname,
            as_real(group.get("initial_lr", group.get("lr"))),
            as_real(group.get("weight_decay")),
            group.get("optimizer"),
            None if fresh is None else name in fresh,
            tuple(group.get("rules") or ()),
        )
    model = contents.get("model")
    others = frozenset(model) - set(rows) if isinstance(model, Mapping) else frozenset()
    bases = trainer.get("param_group_bases") or {}
    factor = factors.pop() if len(factors) == 1 else None
    return GroupingView(
        label,
        rows,
        others,
        as_real(bases.get("base_lr")),
        as_real(bases.get("base_weight_decay")),
        as_real(factor),
        state.get("optimizer"),
    )


@dataclass
class Change:
    """Parameters that differ the same way: a field, its two values, the groups they are in."""

    key: str
    a: Any
    b: Any
    groups: tuple[str | None, str | None]
    names: list[str] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)

    def line(self, max_names: int) -> str:
        """``14 parameters moved from 'default' to 'new' (rules[1]): a.w, a.b, ...``."""
        count = f"{len(self.names)} parameter{'s' if len(self.names) != 1 else ''}"
        ga, gb = self.groups
        if self.key == "group":
            what = f"{count} moved from {_group(ga)} to {_group(gb)}"
        else:
            where = _group(ga) if ga == gb else f"{_group(ga)} -> {_group(gb)}"
            what = f"{where}, {count}: {_LABELS[self.key]} {_value(self.a)} -> {_value(self.b)}"
        why = f" (set by {', '.join(self.sources)})" if self.sources else ""
        return f"{what}{why}: {listing(self.names, max_names)}"


@dataclass
class ParamGroupDiff:
    """What differs between two views.

    Attributes:
        a, b: the two views.
        changes: parameters that differ, bucketed by field, values and groups.
        only_a, only_b: parameters one side has and the other does not.
        settings: run-wide differences (base LR, batch-size LR factor, optimizer class).
    """

    a: GroupingView
    b: GroupingView
    changes: list[Change]
    only_a: list[str]
    only_b: list[str]
    settings: list[str]

    @property
    def equal(self) -> bool:
        """Whether nothing differs."""
        return not (self.changes or self.only_a or self.only_b or self.settings)

    def lines(self, max_names: int = 5) -> list[str]:
        """The report: one line a difference, the sides first."""
        out = [f"A: {self.a.label}", f"B: {self.b.label}"]
        if self.equal:
            return [*out, f"equal: the same {len(self.a.rows)} parameters, groups and values"]
        out += [f"differ: {line}" for line in self.settings]
        out += [f"differ: {change.line(max_names)}" for change in self.changes]
        for side, names in (("A", self.only_a), ("B", self.only_b)):
            if names:
                out.append(f"only in {side}: {len(names)} parameters: {listing(names, max_names)}")
        return out

    def to_dict(self) -> dict[str, Any]:
        """The report as plain values (``--json``)."""
        return {
            "a": self.a.label,
            "b": self.b.label,
            "equal": self.equal,
            "settings": self.settings,
            "changes": [
                {
                    "field": c.key,
                    "a": c.a,
                    "b": c.b,
                    "groups": list(c.groups),
                    "parameters": c.names,
                    "set_by": c.sources,
                }
                for c in self.changes
            ],
            "only_a": self.only_a,
            "only_b": self.only_b,
        }


def diff_views(a: GroupingView, b: GroupingView) -> ParamGroupDiff:
    """Compares two views parameter by parameter (in A's order, then B's own)."""
    names = list(dict.fromkeys([*a.rows, *b.rows]))
    buckets: dict[tuple, Change] = {}
    only_a, only_b = [], []
    for name in names:
        ra, rb = a.row(name), b.row(name)
        if ra is None or rb is None:
            (only_b if ra is None else only_a).append(name)
            continue
        for key in FIELDS:
            va, vb = getattr(ra, key), getattr(rb, key)
            if not _differs(key, va, vb):
                continue
            bucket = (key, _hashable(va), _hashable(vb), ra.group, rb.group)
            change = buckets.setdefault(bucket, Change(key, va, vb, (ra.group, rb.group)))
            change.names.append(name)
            for source in rb.sources or ra.sources:
                if source not in change.sources:
                    change.sources.append(source)
    settings = _setting_changes(a, b)
    return ParamGroupDiff(a, b, list(buckets.values()), only_a, only_b, settings)


_LABELS = {"lr": "lr", "weight_decay": "weight decay", "route": "optimizer", "fresh": "fresh"}


def _differs(key: str, a: Any, b: Any) -> bool:
    if key == "fresh" and (a is None or b is None):
        return False  # one side does not know
    if key in ("lr", "weight_decay"):
        if a is None or b is None:
            return False  # frozen on a side: the group difference says it
        return values_differ(a, b)
    return a != b


def _setting_changes(a: GroupingView, b: GroupingView) -> list[str]:
    out = []
    labels = (
        ("base_lr", "base lr"),
        ("base_weight_decay", "base weight decay"),
        ("lr_factor", "batch-size LR factor"),
    )
    for key, label in labels:
        va, vb = getattr(a, key), getattr(b, key)
        if va is not None and vb is not None and values_differ(va, vb):
            out.append(f"{label} {va:.4g} -> {vb:.4g}")
    if a.optimizer and b.optimizer and a.optimizer != b.optimizer:
        out.append(f"optimizer {a.optimizer} -> {b.optimizer} (no state carries over)")
    if a.unfreezing is not None and b.unfreezing is not None and a.unfreezing != b.unfreezing:
        out.append(
            f"gradual unfreezing (held: no gradients, LR 0): {a.unfreezing or 'none'} -> "
            f"{b.unfreezing or 'none'}"
        )
    return out


def _group(name: str | None) -> str:
    return "frozen" if name is None else f"'{name}'"


def _value(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _hashable(value: Any) -> Any:
    return round(value, 12) if isinstance(value, float) else value

