"""Batch-size LR scaling: once when the optimizer is built, or whenever the batch size changes.

The effective batch is what one optimizer step sees: per-process batch × world size ×
accumulation steps. The "linear" rule scales the LR by ``effective / reference``, the "sqrt"
rule by ``sqrt(effective / reference)`` (batch 64 → 128 multiplies each LR by √2).
Every group is scaled by the same factor, so the ratios between groups stay.
"""

import math
from typing import Any

import torch

from pgtrain.errors import ConfigError
from pgtrain.param_groups.names import param_group_names
from pgtrain.solver._checks import number, positive_int
from pgtrain.solver.lr_scheduler import LRMultiplier
from pgtrain.utils.suggest import did_you_mean

__all__ = [
    "RULES",
    "DynamicLRScaling",
    "describe_lr_scaling",
    "effective_batch_size",
    "lr_scale_factor",
    "scale_lr",
    "scale_optimizer_lrs",
]

RULES = ("linear", "sqrt")


def effective_batch_size(
    batch_per_process: int, world_size: int = 1, accumulation_steps: int = 1
) -> int:
    """Returns the batch one optimizer step sees: per-process batch × processes × accumulation."""
    return (
        positive_int(batch_per_process, "batch_per_process")
        * positive_int(world_size, "world_size")
        * positive_int(accumulation_steps, "accumulation_steps")
    )


def lr_scale_factor(reference_batch: int, effective_batch: int, rule: str = "linear") -> float:
    """Returns the LR factor for `effective_batch` relative to `reference_batch` under `rule`."""
    ratio = positive_int(effective_batch, "effective_batch") / positive_int(
        reference_batch, "reference_batch"
    )
    if rule not in RULES:
        choices = ", ".join(repr(r) for r in RULES)
        raise ConfigError(f"rule={rule!r} is not one of {choices}{did_you_mean(rule, RULES)}")
    return ratio if rule == "linear" else math.sqrt(ratio)


def scale_lr(lr: float, reference_batch: int, effective_batch: int, rule: str = "linear") -> float:
    """Returns `lr` (tuned for `reference_batch`) scaled to `effective_batch` under `rule`."""
    return number(lr, "lr") * lr_scale_factor(reference_batch, effective_batch, rule)


def _expression(reference_batch: int, effective_batch: int, rule: str) -> str:
    ratio = f"({effective_batch}/{reference_batch})"
    return ratio if rule == "linear" else f"sqrt{ratio}"


def describe_lr_scaling(
    lr: float, reference_batch: int, effective_batch: int, rule: str = "linear"
) -> str:
    """Returns the log line of one scaling.

    Example: ``lr 0.02 = 0.01 × (32/16) [linear, reference 16]``.
    """
    scaled = scale_lr(lr, reference_batch, effective_batch, rule)
    expr = _expression(reference_batch, effective_batch, rule)
    return f"lr {scaled:.6g} = {lr:.6g} × {expr} [{rule}, reference {reference_batch}]"


def scale_optimizer_lrs(
    optimizer: torch.optim.Optimizer,
    reference_batch: int,
    effective_batch: int,
    rule: str = "linear",
) -> str:
    """Scales every group's LR once from `reference_batch` to `effective_batch`; returns the log.

    Call it after building the optimizer and before building the LR scheduler, which takes the
    scaled LRs as the groups' initial LRs. One group logs as `describe_lr_scaling`; several as
    ``lr = initial × (32/16) [linear, reference 16]: backbone 0.01 → 0.02, head 0.1 → 0.2``.

    Raises:
        RuntimeError: a scheduler already took the groups' initial LRs (it would not see these).
    """
    factor = lr_scale_factor(reference_batch, effective_batch, rule)
    names = param_group_names(optimizer.param_groups)
    changes = []
    for name, group in zip(names, optimizer.param_groups, strict=True):
        if "initial_lr" in group:
            raise RuntimeError(
                f"param group '{name}' already has an initial_lr: scale the LRs before building "
                "the LR scheduler"
            )
        old = float(group["lr"])
        _set_lr(group, old * factor)
        changes.append((name, old, old * factor))
    if len(changes) == 1:
        return describe_lr_scaling(changes[0][1], reference_batch, effective_batch, rule)
    expr = _expression(reference_batch, effective_batch, rule)
    listing = ", ".join(f"{name} {old:.6g} → {new:.6g}" for name, old, new in changes)
    return f"lr = initial × {expr} [{rule}, reference {reference_batch}]: {listing}"


def _set_lr(group: dict[str, Any], lr: float) -> None:
    if isinstance(group["lr"], torch.Tensor):
        group["lr"].fill_(lr)
    else:
        group["lr"] = lr


class DynamicLRScaling:
    """Rescales every group's LR whenever the effective batch size changes during training.

    With an `LRMultiplier` target the factor is the scheduler's ``lr_factor``, which multiplies
    the schedule, so the next scheduler step keeps the scaling. With a bare optimizer (no
    scheduler, as in a plain training loop) each group's LR becomes its LR at construction ×
    the factor.

    Args:
        target: the LRMultiplier (or the optimizer) whose LRs to scale.
        reference_batch: the effective batch the target's initial LRs are meant for.
        rule: "linear" or "sqrt".
    """

    def __init__(
        self,
        target: LRMultiplier | torch.optim.Optimizer,
        reference_batch: int,
        rule: str = "linear",
    ) -> None:
        if not isinstance(target, LRMultiplier | torch.optim.Optimizer):
            raise TypeError(f"target must be an LRMultiplier or an optimizer, got {type(target)}")
        lr_scale_factor(reference_batch, reference_batch, rule)  # validates both
        self.target = target
        self.reference_batch = reference_batch
        self.rule = rule
        self.batch = reference_batch
        self.factor = 1.0
        if isinstance(target, torch.optim.Optimizer):
            self._base_lrs = [float(g["lr"]) for g in target.param_groups]

    def update(self, effective_batch: int) -> str | None:
        """Applies the factor for `effective_batch`; returns a log line if the batch changed."""
        effective_batch = positive_int(effective_batch, "effective_batch")
        if effective_batch == self.batch:
            return None
        old = self.batch
        self._apply(
            effective_batch, lr_scale_factor(self.reference_batch, effective_batch, self.rule)
        )
        expr = _expression(self.reference_batch, effective_batch, self.rule)
        return (
            f"effective batch {old} → {effective_batch}: lr = initial × {expr} = "
            f"initial × {self.factor:.6g} [{self.rule}, reference {self.reference_batch}]"
        )

    def _apply(self, batch: int, factor: float) -> None:
        self.batch, self.factor = batch, factor
        if isinstance(self.target, LRMultiplier):
            self.target.set_lr_factor(factor)
            return
        for group, base in zip(self.target.param_groups, self._base_lrs, strict=True):
            _set_lr(group, base * factor)

    def state_dict(self) -> dict[str, Any]:
        """Returns the current effective batch and factor (plain values)."""
        return {"batch": self.batch, "factor": self.factor}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restores the batch and re-applies its factor to this run's LRs."""
        batch = positive_int(state.get("batch"), "batch")
        self._apply(batch, lr_scale_factor(self.reference_batch, batch, self.rule))
