"""ScheduleUnits: turns positions given in iterations, epochs or fractions into fractions.

A schedule is a function of progress ``where = iter / max_iter``; configs give milestones and
warmup lengths in whichever unit they like, and fractions let ``train.max_iter`` rescale them.
"""

import logging
from collections.abc import Sequence
from typing import Any

from pgtrain.errors import ConfigError
from pgtrain.solver._checks import number, positive_int
from pgtrain.utils.suggest import did_you_mean

__all__ = ["UNITS", "ScheduleUnits"]

logger = logging.getLogger(__name__)

UNITS = ("fraction", "iter", "epoch")


class ScheduleUnits:
    """Converts positions and lengths given in a schedule's `unit` to fractions of training."""

    def __init__(self, unit: str, max_iter: Any, iters_per_epoch: Any) -> None:
        if unit not in UNITS:
            choices = ", ".join(repr(u) for u in UNITS)
            raise ConfigError(f"unit={unit!r} is not one of {choices}{did_you_mean(unit, UNITS)}")
        self.unit = unit
        self.max_iter = None if max_iter is None else positive_int(max_iter, "max_iter")
        # The shared schedule configs pass the run's epoch length always; it matters for epochs.
        self.iters_per_epoch = None
        if iters_per_epoch is not None:
            self.iters_per_epoch = positive_int(iters_per_epoch, "iters_per_epoch")
        if unit != "fraction" and self.max_iter is None:
            raise ConfigError(
                f"unit={unit!r} needs max_iter (e.g. max_iter='${{train.max_iter}}') to turn "
                "positions into fractions of training"
            )
        if unit == "epoch" and self.iters_per_epoch is None:
            raise ConfigError(
                "unit='epoch' needs iters_per_epoch (iters_per_epoch='${train.iters_per_epoch}', "
                "which a run sets from its train dataset's length)"
            )

    def fraction(self, value: Any, arg: str) -> float:
        """Returns `value` (in this unit) as a fraction of training; `arg` names it in errors."""
        v = number(value, arg)
        if v < 0:
            raise ConfigError(f"{arg}={value} must be >= 0")
        if self.unit == "fraction":
            if v > 1:
                raise ConfigError(
                    f"{arg}={value} is read as a fraction of training (unit='fraction') and must "
                    "be in [0, 1]; for iterations set unit='iter' with max_iter, for epochs "
                    "unit='epoch' with iters_per_epoch"
                )
            return v
        iters = v * self.iters_per_epoch if self.unit == "epoch" else v
        if iters > self.max_iter:
            unit, end = self.unit, self.max_iter
            logger.warning(
                "%s=%s (%s) lies beyond max_iter=%d: never reached", arg, value, unit, end
            )
        return iters / self.max_iter

    def fractions(self, values: Sequence[Any], arg: str) -> list[float]:
        """Returns each of `values` as a fraction of training."""
        if isinstance(values, str | bytes) or not isinstance(values, Sequence):
            raise ConfigError(f"{arg} must be a list of numbers, got {values!r}")
        return [self.fraction(v, f"{arg}[{i}]") for i, v in enumerate(values)]
