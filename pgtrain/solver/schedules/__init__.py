"""LR schedules, in one place: the named multiplier shapes (registry.py: `LR_SCHEDULES`,
`build_schedule`), the shapes fvcore lacks (param_schedulers.py), positions in iterations, epochs
or fractions (units.py), and the one torch scheduler that applies them to every group
(lr_multiplier.py: `LRMultiplier`).

A project registers its own shape with ``@LR_SCHEDULES.register("name")`` (docs/extending.md).
"""

from pgtrain.solver.schedules.lr_multiplier import LRMultiplier, group_lr_curves
from pgtrain.solver.schedules.registry import LR_SCHEDULES, as_schedule, build_schedule, with_warmup
from pgtrain.solver.schedules.units import UNITS, ScheduleUnits

__all__ = [
    "LR_SCHEDULES",
    "UNITS",
    "LRMultiplier",
    "ScheduleUnits",
    "as_schedule",
    "build_schedule",
    "group_lr_curves",
    "with_warmup",
]
