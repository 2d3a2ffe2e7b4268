"""Optimizers and LR schedules: building from config, schedules, the torch adapter, LR scaling."""

from pgtrain.param_groups.names import param_group_names  # re-exported: schedules key by it
from pgtrain.solver.build import (
    build_lr_scheduler,
    build_optimizer,
    build_param_groups_from_config,
)
from pgtrain.solver.hybrid import FlatMuon, HybridOptimizer, MuonAdamW
from pgtrain.solver.lr_scaling import (
    BatchSizeLRScaling,
    describe_lr_scaling,
    effective_batch_size,
    lr_scale_factor,
    scale_lr,
)
from pgtrain.solver.schedules import (
    LR_SCHEDULES,
    LRMultiplier,
    as_schedule,
    build_schedule,
    group_lr_curves,
)

__all__ = [
    "FlatMuon",
    "HybridOptimizer",
    "MuonAdamW",
    "LR_SCHEDULES",
    "BatchSizeLRScaling",
    "LRMultiplier",
    "as_schedule",
    "build_lr_scheduler",
    "build_optimizer",
    "build_param_groups_from_config",
    "build_schedule",
    "describe_lr_scaling",
    "effective_batch_size",
    "group_lr_curves",
    "lr_scale_factor",
    "param_group_names",
    "scale_lr",
]
