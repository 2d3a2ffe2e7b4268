"""Reports on param groups: the summary table, the verbose listing and a JSON-able form.

Each function takes the groups a builder returned (`ParamGroups`, which carry the record: rule
provenance, frozen parameters, tied names), plain group dicts, or an optimizer (its
``param_groups``); for the last two, pass the model to name parameters that lack ``param_names``
and to count the frozen ones.
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from pgtrain.param_groups.audit import named_groups
from pgtrain.param_groups.model_params import collect_model_params
from pgtrain.param_groups.record import PRECEDENCE, BuildRecord, ParamGroups

__all__ = ["format_param_group_table", "format_param_group_details", "param_groups_to_dict"]

Groups = ParamGroups | Sequence[Mapping[str, Any]] | torch.optim.Optimizer


@dataclass
class _Summary:
    named: list[tuple[str, Mapping[str, Any], list[str]]]
    record: BuildRecord | None
    frozen: list[tuple[str, tuple[int, ...]]]
    aliases: dict[str, list[str]]
    base_lr: float | None = None  # what "lr scale" divides by: the record's, or the optimizer's


def _base_lr(groups: Groups, record: BuildRecord | None) -> float | None:
    if record is not None:
        return record.base_lr
    lr = groups.defaults.get("lr") if isinstance(groups, torch.optim.Optimizer) else None
    return float(lr) if isinstance(lr, int | float) and not isinstance(lr, bool) else None


def _summarize(groups: Groups, model: nn.Module | None) -> _Summary:
    record = groups.record if isinstance(groups, ParamGroups) else None
    named = named_groups(groups, model)
    base = _base_lr(groups, record)
    if record is not None:
        frozen = [(d.name, d.shape) for d in record.decisions.values() if d.frozen]
        return _Summary(named, record, frozen, record.aliases, base)
    if model is None:
        return _Summary(named, None, [], {}, base)
    inventory = collect_model_params(model)
    placed = {n for _, _, names in named for n in names}
    frozen = [
        (n, tuple(t.shape))
        for n, t in zip(inventory.names, inventory.tensors, strict=True)
        if n not in placed
    ]
    aliases = {inventory.names[i]: a for i, a in inventory.aliases.items()}
    return _Summary(named, None, frozen, aliases, base)


def format_param_group_table(
    groups: Groups,
    model: nn.Module | None = None,
    *,
    first_iter: int = 1,
    first_lrs: Sequence[float] | None = None,
) -> str:
    """Returns the summary table logged at the start of every run.

    One row per group (name, tensors, parameters, lr, lr scale, weight decay, the algorithm of a
    hybrid optimizer, rules applied), then the totals of trainable and frozen parameters, tied
    parameters and the build's notes. "lr scale" is the group's own LR over the base LR.

    Args:
        groups: the groups (see the module docstring).
        model: names parameters of groups without ``param_names``.
        first_iter: the first iteration that will run, counted as the console counts (1 for a
            new run, 21 for a resume after 20 iterations): the "lr at iter N" column's N.
        first_lrs: every group's LR at that iteration, in group order (the scheduler's
            ``lrs_at``); None: the groups' current ``lr``.
    """
    s = _summarize(groups, model)
    routed = any("optimizer" in g for _, g, _ in s.named)  # Muon + AdamW: which updates it
    firsts = list(first_lrs) if first_lrs is not None else [g.get("lr") for _, g, _ in s.named]
    # After a scheduler took the groups' LRs, the first iteration's LR (warmup included) and
    # `initial_lr x lr_factor`, the one the schedule multiplies, may differ: show both then.
    # At a resume (first_iter > 1) the column always shows: the LRs the run continues with.
    scheduled = first_iter > 1 or any(
        values_differ(_scheduled_lr(g), lr) for (_, g, _), lr in zip(s.named, firsts, strict=True)
    )
    rows = [("group", "tensors", "parameters", "lr", "lr scale", "weight decay", "rules applied")]
    if scheduled:
        rows[0] = (*rows[0][:4], f"lr at iter {first_iter}", *rows[0][4:])
    if routed:
        rows[0] = (*rows[0][:-1], "optimizer", rows[0][-1])
    composed = _compositions(s)
    for (name, group, _), first_lr in zip(s.named, firsts, strict=True):
        lr = _fmt(_scheduled_lr(group))
        first = (_fmt(first_lr),) if scheduled else ()
        mark = "*" if composed.get(name) else ""
        rows.append(
            (
                name,
                f"{len(group['params']):,}",
                f"{_numel(group['params']):,}",
                lr,
                *first,
                _scale(group, s.base_lr) + mark,
                _num(group, "weight_decay"),
                *((str(group.get("optimizer", "-")),) if routed else ()),
                ", ".join(group.get("rules", ())) or "-",
            )
        )
    numeric = tuple(range(1, 7 if scheduled else 6))
    lines = [_header(s.record), *_align(rows, right=numeric)]
    tensors = sum(len(g["params"]) for _, g, _ in s.named)
    values = sum(_numel(g["params"]) for _, g, _ in s.named)
    frozen = sum(_prod(shape) for _, shape in s.frozen)
    lines.append(
        f"trainable: {tensors:,} tensors, {values:,} parameters in {len(s.named)} groups; "
        f"frozen: {len(s.frozen):,} tensors, {frozen:,} parameters"
    )
    for name, others in s.aliases.items():
        lines.append(f"tied: '{name}' is also {', '.join(repr(o) for o in others)} (placed once)")
    for name, ways in composed.items():
        if ways:
            lines.append(f"* '{name}': multipliers from several rules compose: {'; '.join(ways)}")
    lines += [f"note: {note}" for note in (s.record.notes if s.record else ())]
    return "\n".join(lines)


def _compositions(s: _Summary) -> dict[str, list[str]]:
    """Returns, per group, the distinct ways several rules' LR multipliers compose in it."""
    if s.record is None:
        return {}
    found = {}
    for name, _, names in s.named:
        ways = (s.record.decisions[n].composition() for n in names if n in s.record.decisions)
        found[name] = [w for w in dict.fromkeys(ways) if w]
    return found


def values_differ(a: Any, b: Any) -> bool:
    """Whether two hyperparameter values differ beyond float rounding (None never differs)."""
    if a is None or b is None:
        return False
    return abs(float(a) - float(b)) > 1e-12 * max(abs(float(a)), abs(float(b)), 1e-30)


def format_param_group_details(groups: Groups, model: nn.Module | None = None) -> str:
    """Returns the verbose listing: per group its lr, eps, weight_decay, betas or momentum, and
    every parameter's name and shape (a param-group visualizer's listing)."""
    s = _summarize(groups, model)
    width = max((len(n) for _, _, names in s.named for n in names), default=0)
    lines = []
    for i, (name, group, names) in enumerate(s.named):
        scale = f" (scale {group['lr_scale']:.6g})" if "lr_scale" in group else ""
        lines += [
            f"param group {i} '{name}':",
            f"  lr: {group.get('lr', 'optimizer default')}{scale}",
            f"  eps: {group.get('eps', 'N/A')}",
            f"  weight_decay: {group.get('weight_decay', 'optimizer default')}",
            f"  betas: {group['betas']}"
            if "betas" in group
            else f"  momentum: {group.get('momentum', 'N/A')}",
            f"  rules: {', '.join(group.get('rules', ())) or '-'}",
            f"  parameters ({len(names)} tensors, {_numel(group['params']):,} values):",
        ]
        for pname, p in zip(names, group["params"], strict=True):
            lines.append(f"    - {pname:{width}} | shape: {tuple(p.shape)}")
    if s.frozen:
        lines.append(f"frozen ({len(s.frozen)} tensors, not in the optimizer):")
        lines += [f"    - {n:{width}} | shape: {shape}" for n, shape in s.frozen]
    return "\n".join(lines)


def param_groups_to_dict(groups: Groups, model: nn.Module | None = None) -> dict[str, Any]:
    """Returns the report as plain values (for ``json.dump``): groups with their parameters,
    totals, frozen and tied parameters, notes, and every parameter's provenance if known."""
    s = _summarize(groups, model)
    out_groups = []
    for name, group, names in s.named:
        extra = {
            k: _plain(v)
            for k, v in group.items()
            if k not in ("params", "param_names", "name", "rules")
        }
        out_groups.append(
            {
                "name": name,
                **extra,
                "rules": list(group.get("rules", ())),
                "tensors": len(names),
                "parameters": _numel(group["params"]),
                "params": [
                    {"name": n, "shape": list(p.shape)}
                    for n, p in zip(names, group["params"], strict=True)
                ],
            }
        )
    record = s.record
    return {
        "builder": record.builder if record else None,
        "base_lr": record.base_lr if record else None,
        "base_weight_decay": record.base_weight_decay if record else None,
        "precedence": PRECEDENCE,
        "groups": out_groups,
        "totals": {
            "groups": len(out_groups),
            "trainable_tensors": sum(g["tensors"] for g in out_groups),
            "trainable_parameters": sum(g["parameters"] for g in out_groups),
            "frozen_tensors": len(s.frozen),
            "frozen_parameters": sum(_prod(shape) for _, shape in s.frozen),
        },
        "frozen": [{"name": n, "shape": list(shape)} for n, shape in s.frozen],
        "tied": {n: list(o) for n, o in s.aliases.items()},
        "notes": list(record.notes) if record else [],
        "sources": dict(record.sources) if record else {},
        "provenance": {
            d.name: [[src, key, _plain(value)] for src, key, value in d.applied]
            for d in record.decisions.values()
        }
        if record
        else {},
    }


def _header(record: BuildRecord | None) -> str:
    if record is None or record.base_lr is None:
        return "param groups:"
    return (
        f"param groups (builder '{record.builder}', base lr {record.base_lr:.4g}, "
        f"base weight decay {record.base_weight_decay:.4g}):"
    )


def _align(rows: list[tuple[str, ...]], right: tuple[int, ...]) -> list[str]:
    widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]))]
    rule = tuple("-" * w for w in widths)
    out = []
    for row in [rows[0], rule, *rows[1:]]:
        cells = [
            cell.rjust(w) if c in right else cell.ljust(w)
            for c, (cell, w) in enumerate(zip(row, widths, strict=True))
        ]
        out.append("  ".join(cells).rstrip())
    return out


def _num(group: Mapping[str, Any], key: str) -> str:
    return _fmt(group.get(key))


def _fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, int | float) else "default"


def _scheduled_lr(group: Mapping[str, Any]) -> Any:
    """The LR a schedule multiplies: the initial LR times the batch-size factor (`LRMultiplier`
    writes both into the group), or the group's LR when no scheduler took it."""
    if "initial_lr" not in group:
        return group.get("lr")
    return float(group["initial_lr"]) * float(group.get("lr_factor", 1.0))


def _scale(group: Mapping[str, Any], base: float | None) -> str:
    """``lr / base lr`` from the group's own LR (its initial LR once a scheduler took it), so a
    builder's own 5x shows as 5; the group's ``lr_scale`` where the base is unknown or 0."""
    lr = group.get("initial_lr", group.get("lr"))
    if base and isinstance(lr, int | float):
        return _fmt(float(lr) / base)
    return _fmt(group["lr_scale"]) if "lr_scale" in group else "-"


def _numel(tensors: Sequence[torch.Tensor]) -> int:
    return sum(t.numel() for t in tensors)


def _prod(shape: Sequence[int]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def _plain(value: Any) -> Any:
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    if isinstance(value, int | float | str | bool) or value is None:
        return value
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return value.item()
    return repr(value)
