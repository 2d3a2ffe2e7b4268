"""What a build decided for each parameter (`ParamDecision`), the record of a whole build
(`BuildRecord`), and the group list that carries it (`ParamGroups`)."""

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pgtrain.errors import ConfigError
from pgtrain.utils.suggest import did_you_mean

__all__ = ["ParamDecision", "BuildRecord", "ParamGroups", "PRECEDENCE"]

PRECEDENCE = (
    "lr = (last absolute lr, else base lr) x every lr_mult; weight_decay likewise with wd_mult; "
    "group, frozen and optimizer keys: the last matching rule wins"
)


@dataclass(slots=True)
class ParamDecision:
    """The hyperparameters one parameter gets, and which rules set them (its provenance).

    Attributes:
        name: the parameter's canonical name.
        shape: its shape.
        label: the group label it goes to (groups with the same label and hyperparameters merge).
        lr: its learning rate, multipliers included.
        lr_scale: ``lr / base lr`` (the product of multipliers when the base lr is 0).
        weight_decay: its weight decay, multipliers included.
        options: other optimizer keys set by rules (``betas``, ``eps``, ...).
        frozen: whether it stays out of the optimizer.
        applied: ``(source, key, value)`` for every setting applied, in order; a source is a rule
            id or a builder step such as ``layer_decay``.
    """

    name: str
    shape: tuple[int, ...]
    label: str
    lr: float = 0.0
    lr_scale: float = 1.0
    weight_decay: float = 0.0
    options: dict[str, Any] = field(default_factory=dict)
    frozen: bool = False
    applied: list[tuple[str, str, Any]] = field(default_factory=list)

    @property
    def numel(self) -> int:
        """Returns the number of values in the parameter."""
        n = 1
        for d in self.shape:
            n *= d
        return n

    def composition(self, key: str = "lr_mult") -> str | None:
        """Says how multipliers from several sources compose, e.g. ``rules[0] 10 x head 10 =
        100x``; None when fewer than two sources multiply this parameter (factors of 1 do not
        count)."""
        factors = [(source, value) for source, k, value in self.applied if k == key and value != 1]
        if len({source for source, _ in factors}) < 2:
            return None
        product = math.prod(value for _, value in factors)
        return " x ".join(f"{source} {value:g}" for source, value in factors) + f" = {product:g}x"

    def sources(self) -> list[str]:
        """Returns the ids of the rules and builder steps that applied, in order, once each."""
        return list(dict.fromkeys(source for source, _, _ in self.applied))


@dataclass
class BuildRecord:
    """Everything a build decided, kept next to the groups for reports and `explain`.

    Attributes:
        builder: the builder's registry name (or ``"groups"`` for hand-made groups).
        base_lr: the ``lr`` option, or None when the groups did not come from a builder.
        base_weight_decay: the ``weight_decay`` option, or None likewise.
        decisions: one per parameter, canonical names, in model order (frozen ones included);
            a build's are made on first read (`pgtrain.param_groups.decide.Decisions`).
        aliases: the other names of shared or tied parameters, keyed by canonical name.
        sources: how each rule or builder step shows in reports, keyed by its id.
        notes: facts worth a line in the report (layer ids found, hints that matched nothing).
    """

    builder: str
    base_lr: float | None = None
    base_weight_decay: float | None = None
    decisions: Mapping[str, ParamDecision] = field(default_factory=dict)
    aliases: dict[str, list[str]] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def decision(self, name: str) -> ParamDecision:
        """Returns the decision for `name` (a canonical name or an alias)."""
        found = self.decisions.get(name)
        if found is not None:
            return found
        for canonical, others in self.aliases.items():
            if name in others:
                return self.decisions[canonical]
        names = [*self.decisions, *(a for others in self.aliases.values() for a in others)]
        raise ConfigError(f"no parameter named '{name}' in the model{did_you_mean(name, names)}")


class ParamGroups(list):
    """A list of torch param-group dicts that also carries the `BuildRecord` behind it.

    Pass it to any ``torch.optim`` optimizer as ``params``; the record stays here for the report,
    the JSON form and `explain`. Each group dict has ``params``, ``param_names``, ``name``, ``lr``,
    ``lr_scale``, ``weight_decay``, ``rules`` (ids of the rules that applied to its members) and
    any optimizer key a rule set.
    """

    def __init__(self, groups: list[dict[str, Any]], record: BuildRecord) -> None:
        super().__init__(groups)
        self.record = record

    def explain(self, name: str, lr_factor: float = 1.0) -> str:
        """Says which group parameter `name` is in and which rules set its hyperparameters;
        `lr_factor` is the run's batch-size LR factor (``train.lr_scaling``), which multiplies
        every group's LR after the rules."""
        d = self.record.decision(name)
        group = next((g["name"] for g in self if d.name in g["param_names"]), None)
        lines = [
            f"{d.name} {tuple(d.shape)}: "
            + (f"group '{group}'" if group else "frozen (not in the optimizer)")
        ]
        others = self.record.aliases.get(d.name)
        if others:
            lines.append(f"  tied: also named {', '.join(others)} (placed once)")
        lines.append(f"  lr = {d.lr:.6g}{_base(self.record.base_lr, 'lr', d.applied)}")
        if lr_factor != 1.0:
            lines.append(
                f"  lr that trains = {d.lr * lr_factor:.6g} (x batch-size LR factor "
                f"{lr_factor:.4g}, train.lr_scaling; the schedule multiplies it per iteration)"
            )
        lines.append(
            f"  weight_decay = {d.weight_decay:.6g}"
            f"{_base(self.record.base_weight_decay, 'weight_decay', d.applied)}"
        )
        for key, label in (("lr_mult", "lr"), ("wd_mult", "weight_decay")):
            composed = d.composition(key)
            if composed:
                lines.append(f"  {label} multipliers compose: {composed}")
        for key, value in d.options.items():
            lines.append(f"  {key} = {value!r}")
        if not d.applied:
            lines.append("  no rule applied: base values")
        for source in d.sources():
            sets = ", ".join(f"{k}={v!r}" for s, k, v in d.applied if s == source)
            lines.append(f"  by {self.record.sources.get(source, source)}: {sets}")
        lines.append(f"  precedence: {PRECEDENCE}")
        return "\n".join(lines)


def _base(base: float | None, key: str, applied: list[tuple[str, str, Any]]) -> str:
    """Returns how a value was composed, e.g. `` (base 0.01 x 10 x 0.5)``, or for a value a
    builder's groups set themselves `` (set by builder 'two_speed': 5 x base 0.005)``."""
    absolute = [(s, v) for s, k, v in applied if k == key]
    if absolute and absolute[-1][0].startswith("builder '"):
        return f" ({_set_by(*absolute[-1], base)})"
    mult_key = "lr_mult" if key == "lr" else "wd_mult"
    mults = [f"{v:g}" for _, k, v in applied if k == mult_key]
    start = (
        f"{absolute[-1][1]:.6g} from {absolute[-1][0]}"
        if absolute
        else ("base" if base is None else f"base {base:.6g}")
    )
    return f" ({' x '.join([start, *mults])})"


def _set_by(source: str, value: float, base: float | None) -> str:
    """``set by builder 'x': 5 x base 0.005``: the builder's own value, against the base."""
    if not base or float(value) == float(base):
        return f"set by {source}" + (f" = base {base:.6g}" if base else "")
    return f"set by {source}: {float(value) / base:.6g} x base {base:.6g}"
