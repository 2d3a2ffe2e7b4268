"""What a resumed run changed against its checkpoint: base values, LR factor, groups, members."""

from collections.abc import Mapping
from typing import Any

from pgtrain.param_groups.names import param_group_names
from pgtrain.param_groups.record import ParamGroups
from pgtrain.param_groups.report import values_differ
from pgtrain.utils.checks import is_real
from pgtrain.utils.suggest import listing

__all__ = ["changes_against_checkpoint"]


def changes_against_checkpoint(
    groups: ParamGroups, checkpoint: Mapping[str, Any], lr_factor: float | None = None
) -> list[str]:
    """Lines saying what a resumed run changed against its checkpoint: the base LR and weight
    decay, the batch-size LR factor (`lr_factor`, this run's), each group's LR and weight decay,
    new and removed groups, parameters in another group (or one line saying nothing changed)."""
    trainer = checkpoint.get("trainer")
    trainer = trainer if isinstance(trainer, dict) else {}
    saved = trainer.get("optimizer") if isinstance(trainer.get("optimizer"), dict) else {}
    hparams, placed = saved.get("group_hparams") or {}, saved.get("groups") or {}
    changes = _base_changes(groups.record, trainer.get("param_group_bases") or {})
    old_factor = _saved_lr_factor(trainer)
    if lr_factor is not None and old_factor is not None and values_differ(old_factor, lr_factor):
        changes.append(
            f"batch-size LR factor {old_factor:.4g} -> {lr_factor:.4g} (every group's LR "
            f"x{lr_factor / old_factor:.4g}; train.lr_scaling)"
        )
    if not hparams:  # an older checkpoint (torch's optimizer state): nothing to compare with
        return [f"changed against the checkpoint: {change}" for change in changes]
    ours = dict(zip(param_group_names(groups), groups, strict=True))
    for name, group in ours.items():
        if name not in hparams:
            changes.append(f"new group '{name}' ({len(group['params'])} tensors)")
        elif described := _group_change(hparams[name], group):
            changes.append(f"'{name}': {described}")
    changes += [f"group '{n}' is gone" for n in hparams if n not in ours]
    moved = [
        f"{n} ('{placed[n]}' -> '{g}')"
        for g, group in ours.items()
        for n in group["param_names"]
        if n in placed and placed[n] != g
    ]
    if moved:
        shown = listing(moved, 5)
        changes.append(f"{len(moved)} parameters in another group: {shown}")
    if not changes:
        return ["unchanged against the checkpoint: groups, LRs and weight decay"]
    return [f"changed against the checkpoint: {change}" for change in changes]


def _saved_lr_factor(trainer: dict[str, Any]) -> float | None:
    """The batch-size LR factor the checkpoint's schedule applied (in its hook state)."""
    for state in (trainer.get("hooks") or {}).values():
        if isinstance(state, dict) and isinstance(state.get("lr_factor"), int | float):
            return float(state["lr_factor"])
    return None


def _base_changes(record: Any, saved: dict[str, Any]) -> list[str]:
    out = []
    for key, label in (("base_lr", "base lr"), ("base_weight_decay", "base weight decay")):
        old, new = saved.get(key), getattr(record, key, None)
        if is_real(old) and is_real(new) and values_differ(old, new):
            out.append(f"{label} {old:.4g} -> {new:.4g}")
    return out


def _group_change(saved: dict[str, Any], group: dict[str, Any]) -> str:
    """``lr 0.05 -> 0.1, weight decay 0.0001 -> 0``: the group's LR (the one its schedule
    scales) and weight decay, the checkpoint's -> this run's; "" when both are the same."""
    parts = []
    for key, label in (("initial_lr", "lr"), ("weight_decay", "weight decay")):
        old = saved.get(key, saved.get("lr")) if key == "initial_lr" else saved.get(key)
        new = group.get(key, group.get("lr")) if key == "initial_lr" else group.get(key)
        if is_real(old) and is_real(new) and values_differ(old, new):
            parts.append(f"{label} {old:.4g} -> {float(new):.4g}")
    return ", ".join(parts)
