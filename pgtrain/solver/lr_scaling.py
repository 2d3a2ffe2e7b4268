"""Batch-size LR scaling: one factor on every group's LR, at the start or as the batch changes.

The effective batch is what one optimizer step sees: per-process batch × world size ×
accumulation steps. The "linear" rule scales the LR by ``effective / reference``, the "sqrt"
rule by ``sqrt(effective / reference)`` (batch 64 → 128 multiplies each LR by √2).
Every group is scaled by the same factor, so the ratios between groups stay.
"""

import math
from dataclasses import dataclass
from typing import Any, Literal

import torch

from pgtrain.config.schema import setting
from pgtrain.errors import ConfigError
from pgtrain.param_groups.names import param_group_names
from pgtrain.solver._checks import number, positive_int
from pgtrain.solver.schedules.lr_multiplier import LRMultiplier
from pgtrain.utils.suggest import did_you_mean

__all__ = [
    "RULES",
    "BatchSizeLRScaling",
    "LRScalingSettings",
    "describe_lr_scaling",
    "effective_batch_size",
    "lr_scale_factor",
    "scale_lr",
]

RULES = ("linear", "sqrt")


@dataclass
class LRScalingSettings:
    """``train.lr_scaling``: scale every group's LR with the effective batch size."""

    reference_batch: int | None = setting(
        None,
        "the batch the config's LRs are tuned for; the run's effective batch scales them",
        ge=1,
        null="not scale (unless dynamic)",
    )
    rule: Literal["linear", "sqrt"] = setting("linear", "LR x ratio, or LR x sqrt(ratio)")
    dynamic: bool = setting(False, "rescale whenever the batch size changes during training")


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


def _set_lr(group: dict[str, Any], lr: float) -> None:
    if isinstance(group["lr"], torch.Tensor):
        group["lr"].fill_(lr)
    else:
        group["lr"] = lr


class BatchSizeLRScaling:
    """Scales every group's LR by one factor for the effective batch, at the start or whenever
    the batch changes; the one mechanism of batch-size LR scaling.

    With an `LRMultiplier` target the factor is the scheduler's ``lr_factor``: each group's LR is
    its initial LR × its schedule × the factor, so schedule steps keep the scaling and the groups'
    initial LRs stay the config's. With a bare optimizer (no scheduler, as in a plain training
    loop) each group's LR becomes its LR at construction × the factor.

    Args:
        target: the LRMultiplier (or the optimizer) whose LRs to scale.
        reference_batch: the effective batch the target's initial LRs are meant for.
        rule: "linear" or "sqrt".

    Raises:
        ConfigError: a bad rule or batch, or an optimizer a scheduler already drives (its next
            step would undo the scaling: pass the scheduler).
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
        if isinstance(target, torch.optim.Optimizer):
            if any("initial_lr" in g for g in target.param_groups):
                raise ConfigError(
                    "this optimizer's LRs are set by an LR scheduler, which would undo the "
                    "scaling at its next step; scale through the scheduler instead"
                )
            self._initial = [float(g["lr"]) for g in target.param_groups]
        else:
            self._initial = [float(b) for b in target.base_lrs]
        self.target = target
        self.reference_batch = reference_batch
        self.rule = rule
        self.batch = reference_batch
        self.factor = 1.0

    def update(self, effective_batch: int) -> str | None:
        """Applies the factor for `effective_batch`; returns a log line if the batch changed."""
        effective_batch = positive_int(effective_batch, "effective_batch")
        if effective_batch == self.batch:
            return None
        old = self.batch
        self._apply(effective_batch)
        return (
            f"effective batch {old} → {effective_batch}: lr = initial × {self._expression()} = "
            f"initial × {self.factor:.6g} [{self.rule}, reference {self.reference_batch}]"
        )

    def summary(self) -> str:
        """Says how the current factor scales each group's initial LR.

        One group: ``lr 0.02 = 0.01 × (32/16) [linear, reference 16]``; several: ``lr = initial
        × (32/16) [linear, reference 16]: backbone 0.01 → 0.02, head 0.1 → 0.2``.
        """
        if len(self._initial) == 1:
            return describe_lr_scaling(
                self._initial[0], self.reference_batch, self.batch, self.rule
            )
        groups = self.target.optimizer if isinstance(self.target, LRMultiplier) else self.target
        names = param_group_names(groups.param_groups)
        listing = ", ".join(
            f"{name} {lr:.6g} → {lr * self.factor:.6g}"
            for name, lr in zip(names, self._initial, strict=True)
        )
        return (
            f"lr = initial × {self._expression()} [{self.rule}, reference "
            f"{self.reference_batch}]: {listing}"
        )

    def _expression(self) -> str:
        return _expression(self.reference_batch, self.batch, self.rule)

    def _apply(self, batch: int) -> None:
        self.batch = batch
        self.factor = lr_scale_factor(self.reference_batch, batch, self.rule)
        if isinstance(self.target, LRMultiplier):
            self.target.set_lr_factor(self.factor)
            return
        for group, base in zip(self.target.param_groups, self._initial, strict=True):
            _set_lr(group, base * self.factor)

    def state_dict(self) -> dict[str, Any]:
        """Returns the current effective batch and factor (plain values)."""
        return {"batch": self.batch, "factor": self.factor}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restores the batch and re-applies its factor to this run's LRs."""
        self._apply(positive_int(state.get("batch"), "batch"))
