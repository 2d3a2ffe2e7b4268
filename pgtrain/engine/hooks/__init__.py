"""The hooks that run around each training step, one file per hook that keeps state, and the one
list a run trains with (standard.py: `default_hooks`, with the config's own ``hooks``)."""

from pgtrain.engine.hooks.basic import (
    EvalHook,
    IterationTimer,
    NonFiniteLossGuard,
    PeriodicWriter,
    UnusedParameterCheck,
    default_writers,
)
from pgtrain.engine.hooks.checkpoint import PeriodicCheckpointer
from pgtrain.engine.hooks.ema import EMAHook
from pgtrain.engine.hooks.lr_scheduler import BatchSizeLRScalingHook, LRSchedulerHook
from pgtrain.engine.hooks.param_group_stats import ParamGroupStatsHook
from pgtrain.engine.hooks.standard import config_hooks, default_hooks
from pgtrain.engine.hooks.unfreeze import GradualUnfreezing

__all__ = [
    "BatchSizeLRScalingHook",
    "EMAHook",
    "EvalHook",
    "GradualUnfreezing",
    "IterationTimer",
    "LRSchedulerHook",
    "NonFiniteLossGuard",
    "ParamGroupStatsHook",
    "PeriodicCheckpointer",
    "PeriodicWriter",
    "UnusedParameterCheck",
    "config_hooks",
    "default_hooks",
    "default_writers",
]
