"""Optimizer state keyed by parameter name, so a resume survives a change of grouping.

``torch.optim.Optimizer.state_dict()`` keys state by position across groups, so regrouping (the Mask
R-CNN fine-tuning case: trained with one LR for everything, resumed with a 10x head multiplier)
would hand one parameter's momentum to another. `optimizer_state_by_name` keys it by parameter name
instead; `load_optimizer_state_by_name` restores each parameter's state by name into an optimizer
built with the current config, whose hyperparameters stay as they are.
"""

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from pgtrain.errors import CheckpointError
from pgtrain.param_groups.audit import named_groups
from pgtrain.param_groups.names import param_group_names
from pgtrain.utils import sharding
from pgtrain.utils.suggest import listing

__all__ = [
    "optimizer_state_by_name",
    "load_optimizer_state_by_name",
    "optimizer_state_from_torch",
    "OptimizerStateLoadReport",
    "STATE_FORMAT",
]

logger = logging.getLogger(__name__)

STATE_FORMAT = "pgtrain.optimizer_state_by_name/1"
_PLAIN = (int, float, bool, str, type(None))
_SHOWN = 5


def optimizer_state_by_name(
    optimizer: torch.optim.Optimizer, model: nn.Module | None = None
) -> dict[str, Any]:
    """Returns the optimizer's state keyed by parameter name, for a checkpoint.

    Holds only tensors and plain values (it loads with ``torch.load(weights_only=True)``):
    ``state`` (each parameter's state: momentum buffers, Adam moments and step), ``shapes`` (each
    parameter's shape when saved), ``groups`` (each parameter's group name) and
    ``group_hparams`` (each group's plain hyperparameters, for the record) and ``optimizer`` (its
    class name). Tensors are the optimizer's own (not copies), as with ``Optimizer.state_dict()``.

    Args:
        optimizer: the optimizer; names come from its groups' ``param_names``.
        model: names parameters of groups without ``param_names`` (by identity).
    """
    out = _empty_state(type(optimizer).__name__)
    for gname, group, names in named_groups(optimizer, model):
        out["group_hparams"][gname] = {
            k: _plain_or_none(v) for k, v in group.items() if k not in ("params", "param_names")
        }
        for name, p in zip(names, group["params"], strict=True):
            out["groups"][name] = gname
            out["shapes"][name] = list(p.shape)
            state = optimizer.state.get(p)
            if state:
                out["state"][name] = dict(state)
    return out


@dataclass
class OptimizerStateLoadReport:
    """What `load_optimizer_state_by_name` did.

    Attributes:
        restored: parameters whose state was restored.
        moved: ``(name, saved group, current group)`` for parameters whose group changed.
        added: parameters of the optimizer without saved state (they start fresh).
        dropped: saved parameters the optimizer does not have.
        mismatched: ``(name, saved shape, current shape)``: state dropped, the shape changed.
        optimizer_changed: ``(saved class, current class)`` when the optimizer type changed, in
            which case no state is restored (every parameter counts as added).
        fresh_groups: groups whose running group state (see `group_state`) had nothing to
            restore from: the checkpoint has no group of that name.
        rerouted: ``(name, saved algorithm, current algorithm)`` for parameters a hybrid
            optimizer (Muon + AdamW) now updates with the other algorithm: their state (Muon's
            momentum is no AdamW moment) starts fresh.
    """

    restored: list[str] = field(default_factory=list)
    moved: list[tuple[str, str, str]] = field(default_factory=list)
    added: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    mismatched: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = field(default_factory=list)
    optimizer_changed: tuple[str, str] | None = None
    rerouted: list[tuple[str, str, str]] = field(default_factory=list)
    fresh_groups: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """Returns a few lines for the log: counts, moves grouped by (from, to), some names."""
        lines = [
            f"optimizer state by name: restored {len(self.restored)}, moved "
            f"{len(self.moved)}, added {len(self.added)}, dropped {len(self.dropped)}, "
            f"shape changed {len(self.mismatched)}"
            + (f", other algorithm {len(self.rerouted)}" if self.rerouted else "")
        ]
        if self.optimizer_changed:
            old, new = self.optimizer_changed
            lines.append(f"  the optimizer changed from {old} to {new}: all state starts fresh")
        moves: dict[tuple[str, str], list[str]] = {}
        for name, old, new in self.moved:
            moves.setdefault((old, new), []).append(name)
        for (old, new), names in moves.items():
            lines.append(f"  moved '{old}' -> '{new}': {_some(names)}")
        if self.added:
            lines.append(f"  added (fresh state): {_some(self.added)}")
        if self.dropped:
            lines.append(f"  dropped (not in the optimizer): {_some(self.dropped)}")
        for name, old, new in self.mismatched:
            lines.append(f"  shape changed, state dropped: {name} {old} -> {new}")
        for name, old, new in self.rerouted:
            lines.append(f"  now updated by {new}, not {old}: state starts fresh: {name}")
        if self.fresh_groups:
            lines.append(
                "  groups the checkpoint does not have (their running group state starts "
                f"fresh): {_some(self.fresh_groups)}"
            )
        return "\n".join(lines)


def load_optimizer_state_by_name(
    optimizer: torch.optim.Optimizer,
    state: Mapping[str, Any],
    model: nn.Module | None = None,
    group_state: Sequence[str] = (),
) -> OptimizerStateLoadReport:
    """Restores each parameter's saved state by name; the optimizer keeps its hyperparameters.

    The current groups (and so the current config's lr, weight decay, betas, ...) stay; only
    per-parameter state (momentum buffers, Adam moments and step, ...) is loaded, cast to the
    parameter's device (and dtype for floating state other than ``step``, as torch does). A state
    whose parameter's shape changed is dropped with a warning. The summary is logged.

    Args:
        optimizer: an optimizer built with the current config.
        state: what `optimizer_state_by_name` returned (possibly through a checkpoint).
        model: names parameters of groups without ``param_names`` (by identity).
        group_state: group keys that are running state rather than hyperparameters (a
            schedule-free optimizer's ``k``, ``weight_sum``): restored into the groups of the
            same name; a group the checkpoint does not have keeps its initial values (listed in
            the report's ``fresh_groups``).

    Raises:
        CheckpointError: `state` is not in the name-keyed format.
    """
    if not isinstance(state, Mapping) or state.get("format") != STATE_FORMAT:
        raise CheckpointError(
            "optimizer state is not keyed by parameter name (expected format "
            f"'{STATE_FORMAT}'); convert a torch optimizer.state_dict() with "
            "optimizer_state_from_torch(state_dict, names)"
        )
    report = OptimizerStateLoadReport()
    saved, shapes, saved_groups = state["state"], state["shapes"], state["groups"]
    saved_type, current_type = state.get("optimizer"), type(optimizer).__name__
    if saved_type is not None and saved_type != current_type:
        # Another optimizer's buffers (momentum vs Adam moments) would break its step.
        report.optimizer_changed = (saved_type, current_type)
        report.added = [n for _, _, names in named_groups(optimizer, model) for n in names]
        logger.warning("%s", report.summary())
        return report
    current: set[str] = set()
    for gname, group, names in named_groups(optimizer, model):
        for name, p in zip(names, group["params"], strict=True):
            current.add(name)
            if name not in shapes:
                report.added.append(name)
                continue
            if shapes[name] is not None and tuple(shapes[name]) != tuple(p.shape):
                report.mismatched.append((name, tuple(shapes[name]), tuple(p.shape)))
                optimizer.state.pop(p, None)
                continue
            old_part = _algorithm(state, saved_groups.get(name))
            if old_part != group.get("optimizer"):  # Muon's momentum is no AdamW moment
                report.rerouted.append((name, str(old_part), str(group.get("optimizer"))))
                optimizer.state.pop(p, None)
                continue
            if saved_groups.get(name) != gname:
                report.moved.append((name, str(saved_groups.get(name)), gname))
            if name in saved:
                optimizer.state[p] = {k: _cast(k, v, p, group) for k, v in saved[name].items()}
            else:
                optimizer.state.pop(p, None)  # saved before its first step: no state yet
            report.restored.append(name)
    report.dropped = [n for n in shapes if n not in current]
    if group_state:
        saved_hparams = state.get("group_hparams", {})
        for gname, group, _ in named_groups(optimizer, model):
            saved_group = saved_hparams.get(gname)
            if saved_group is None:
                report.fresh_groups.append(gname)
                continue
            for key in group_state:
                if saved_group.get(key) is not None:
                    group[key] = saved_group[key]
    for name, old, new in report.mismatched:
        logger.warning(
            "optimizer state of '%s' dropped: saved for shape %s, now %s", name, old, new
        )
    logger.info("%s", report.summary())
    return report


def optimizer_state_from_torch(
    state_dict: Mapping[str, Any], names: Sequence[str] | None = None
) -> dict[str, Any]:
    """Converts a torch ``optimizer.state_dict()`` (keyed by position) to the name-keyed form.

    For checkpoints saved before pgtrain (older checkpoints of a fine-tuning run). Names come from
    the saved groups' ``param_names`` when present; otherwise `names` lists the parameter names in
    the order the old optimizer saw them, e.g. ``[n for n, _ in model.named_parameters()]`` for
    ``SGD(model.parameters())``. Shapes are taken from the state tensors that have one.

    Raises:
        CheckpointError: the names cannot be determined or their number does not match.
    """
    groups = state_dict["param_groups"]
    ids = [i for g in groups for i in g["params"]]
    if all("param_names" in g for g in groups):
        names = [n for g in groups for n in g["param_names"]]
    if names is None or len(names) != len(ids):
        got = "no names" if names is None else f"{len(names)} names"
        raise CheckpointError(
            f"the torch optimizer state has {len(ids)} parameters but {got} "
            "were given; pass the parameter names in the old optimizer's order"
        )
    out = _empty_state(None)  # the optimizer's class is not recorded by torch
    position = dict(zip(ids, names, strict=True))
    for gname, group in zip(param_group_names(groups), groups, strict=True):
        out["group_hparams"][gname] = {
            k: _plain_or_none(v) for k, v in group.items() if k not in ("params", "param_names")
        }
        for pid in group["params"]:
            name = position[pid]
            out["groups"][name] = gname
            entry = state_dict["state"].get(pid)
            if entry:
                out["state"][name] = dict(entry)
            shaped = [
                v
                for k, v in (entry or {}).items()
                if k != "step" and isinstance(v, torch.Tensor) and v.ndim > 0
            ]
            if shaped:
                out["shapes"][name] = list(shaped[0].shape)
    for name in names:  # parameters without state: shape unknown, keep them "present"
        out["shapes"].setdefault(name, None)
    return out


def _empty_state(optimizer: str | None) -> dict[str, Any]:
    return {
        "format": STATE_FORMAT,
        "optimizer": optimizer,
        "state": {},
        "shapes": {},
        "groups": {},
        "group_hparams": {},
    }


def _cast(key: str, value: Any, param: torch.Tensor, group: Mapping[str, Any]) -> Any:
    """Moves a state value next to its parameter, as ``Optimizer.load_state_dict`` does.

    A parameter sharded by FSDP (a DTensor) gets its shard of a whole saved tensor of its shape:
    each process keeps its own slice, whichever number of processes saved it.
    """
    if not isinstance(value, torch.Tensor):
        return value
    if key == "step":  # kept as saved (on CPU) unless the step runs on the device
        if group.get("fused") or group.get("capturable"):
            return value.to(dtype=torch.float32, device=param.device)
        return value
    if param.is_floating_point() and value.is_floating_point():
        value = value.to(dtype=param.dtype, device=param.device)
    else:
        value = value.to(device=param.device)
    return sharding.shard_like(value, param)


def _algorithm(state: Mapping[str, Any], group: str | None) -> Any:
    """The algorithm a hybrid optimizer's saved group was routed to (None for other ones)."""
    return (state.get("group_hparams", {}).get(group) or {}).get("optimizer")


def _plain_or_none(value: Any) -> Any:
    if isinstance(value, _PLAIN):
        return value
    if isinstance(value, tuple | list) and all(isinstance(v, _PLAIN) for v in value):
        return type(value)(value)
    return None  # e.g. a tensor lr: not needed to resume, and must not break weights_only


def _some(names: list[str]) -> str:
    return listing(names, _SHOWN)
