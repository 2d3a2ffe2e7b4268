"""Multiplier schedules fvcore lacks: warmup as a factor, multistep on fractions, delayed start.

Every class here is an fvcore ``ParamScheduler``: a pure function of training progress
``where = iteration / max_iter`` returning a multiplier of each group's own LR. Positions and
lengths are fractions of training; `pgtrain.solver.schedules.units` converts iterations and epochs.
"""

import bisect
from collections.abc import Callable, Sequence

from fvcore.common.param_scheduler import ParamScheduler

from pgtrain.errors import ConfigError
from pgtrain.utils.suggest import did_you_mean

__all__ = [
    "WARMUP_METHODS",
    "DelayedStartSchedule",
    "MultiStepSchedule",
    "WarmupSchedule",
    "check_warmup",
    "warmup_factor_at",
]

WARMUP_METHODS = ("linear", "constant")

# A boundary (milestone, end of warmup or hold) counts as reached within _EPS, so fractions reached
# by two routes (i / max_iter vs. a config's 0.1 + 0.05) agree; 1e-9 stays below 1 / max_iter for
# any run shorter than a billion iterations, so no iteration is moved across a boundary.
_EPS = 1e-9


def warmup_factor_at(where: float, length: float, factor: float, method: str) -> float:
    """Returns STMixer's warmup factor at `where`, 1 once `where` reaches `length`.

    "linear" interpolates from `factor` (at 0) to 1 (at `length`); "constant" is `factor`
    throughout the warmup.
    """
    if where + _EPS >= length:
        return 1.0
    if method == "constant":
        return factor
    alpha = max(where, 0.0) / length
    return factor * (1.0 - alpha) + alpha


def check_warmup(length: float, factor: float, method: str) -> None:
    """Raises ConfigError when a warmup length (a fraction), factor or method is invalid."""
    if method not in WARMUP_METHODS:
        choices = ", ".join(repr(m) for m in WARMUP_METHODS)
        hint = did_you_mean(method, WARMUP_METHODS)
        raise ConfigError(f"warmup_method={method!r} is not one of {choices}{hint}")
    if not 0.0 <= factor:
        raise ConfigError(f"warmup_factor={factor} must be >= 0 (a ratio of each group's LR)")
    if not 0.0 <= length:
        raise ConfigError(f"warmup_length={length} must be >= 0")


class WarmupSchedule(ParamScheduler):
    """Multiplies a schedule by a warmup ramp over the first `length` of training.

    This is STMixer's ``WarmupMultiStepLR`` rule: the warmup factor multiplies whatever the
    schedule gives (so a milestone inside the warmup still applies), and at the end of the warmup
    the schedule continues without a jump.

    Args:
        schedule: the multiplier to warm up.
        length: warmup length as a fraction of training.
        factor: the multiplier at the start of the warmup (a ratio of each group's LR).
        method: "linear" (from `factor` to 1) or "constant" (`factor` throughout).
    """

    def __init__(
        self,
        schedule: Callable[[float], float],
        *,
        length: float,
        factor: float = 0.001,
        method: str = "linear",
    ) -> None:
        check_warmup(length, factor, method)
        self.schedule = schedule
        self.length = length
        self.factor = factor
        self.method = method

    def __call__(self, where: float) -> float:
        return self.schedule(where) * warmup_factor_at(where, self.length, self.factor, self.method)


class MultiStepSchedule(ParamScheduler):
    """Multiplies by `gamma` at each milestone passed: ``gamma ** (milestones <= where)``.

    Args:
        milestones: strictly increasing fractions of training.
        gamma: the factor applied at each milestone.
    """

    def __init__(self, milestones: Sequence[float], gamma: float = 0.1) -> None:
        milestones = [float(m) for m in milestones]
        if any(b <= a for a, b in zip(milestones, milestones[1:], strict=False)):
            raise ConfigError(f"milestones={milestones} must be strictly increasing")
        if gamma <= 0:
            raise ConfigError(f"gamma={gamma} must be > 0")
        self.milestones = milestones
        self.gamma = gamma

    def __call__(self, where: float) -> float:
        return self.gamma ** bisect.bisect_right(self.milestones, where + _EPS)


class DelayedStartSchedule(ParamScheduler):
    """Holds the multiplier at 0, warms up linearly, then follows a schedule.

    For gradual unfreezing of a group (e.g. a pretrained backbone) without touching
    ``requires_grad``, which keeps DDP's set of reducing parameters fixed. While the multiplier is
    0, SGD (with momentum and weight decay) and Adam/AdamW leave the weights bit-identical: every
    update they make, momentum and decoupled decay included, is multiplied by the LR.

    Args:
        hold_length: fraction of training held at multiplier 0.
        warmup_length: fraction of training after the hold over which the multiplier ramps
            linearly from `warmup_factor` × schedule to the schedule.
        warmup_factor: the ramp's start, as a ratio of the schedule.
        schedule: the schedule to follow; None follows the main schedule of the `LRMultiplier`
            this is given to as a group schedule (see `with_main`).
    """

    def __init__(
        self,
        *,
        hold_length: float,
        warmup_length: float = 0.0,
        warmup_factor: float = 0.001,
        schedule: Callable[[float], float] | None = None,
    ) -> None:
        check_warmup(warmup_length, warmup_factor, "linear")
        if not 0.0 <= hold_length:
            raise ConfigError(f"hold_length={hold_length} must be >= 0")
        self.hold_length = hold_length
        self.warmup_length = warmup_length
        self.warmup_factor = warmup_factor
        self.schedule = schedule

    def with_main(self, main: Callable[[float], float]) -> "DelayedStartSchedule":
        """Returns this schedule following `main` if it has no schedule of its own, else itself."""
        if self.schedule is not None:
            return self
        return DelayedStartSchedule(
            hold_length=self.hold_length,
            warmup_length=self.warmup_length,
            warmup_factor=self.warmup_factor,
            schedule=main,
        )

    def __call__(self, where: float) -> float:
        if self.schedule is None:
            raise ConfigError(
                "a delayed_start schedule without schedule= follows the main schedule, so it "
                "only works in LRMultiplier(group_schedules=...); elsewhere pass schedule="
            )
        if where + _EPS < self.hold_length:
            return 0.0
        ramp = warmup_factor_at(
            where - self.hold_length, self.warmup_length, self.warmup_factor, "linear"
        )
        return self.schedule(where) * ramp
