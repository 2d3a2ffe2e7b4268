"""The training engine: trainer, hooks, launch, and what training scripts share."""

from pgtrain.engine.compile import compile_for_training
from pgtrain.engine.ddp import create_ddp_model
from pgtrain.engine.defaults import (
    add_grouping_arguments,
    apply_grouping_arguments,
    check_output_dir,
    collective_timeout,
    default_argument_parser,
    default_setup,
    default_writers,
    resolve_device,
    save_config,
    stall_timeout,
    user_errors_exit,
)
from pgtrain.engine.ema import EMAHook
from pgtrain.engine.hook_base import HookBase
from pgtrain.engine.hooks import (
    BatchSizeLRScalingHook,
    EvalHook,
    IterationTimer,
    LRSchedulerHook,
    NonFiniteLossGuard,
    PeriodicWriter,
    UnusedParameterCheck,
)
from pgtrain.engine.launch import launch
from pgtrain.engine.param_group_stats import ParamGroupStatsHook
from pgtrain.engine.periodic_checkpointer import PeriodicCheckpointer
from pgtrain.engine.preemption import (
    STALL_EXIT_CODE,
    StallWatchdog,
    StopSignal,
    train_preemptibly,
)
from pgtrain.engine.run import Run, build_run, loader_effective_batch, resume_training_state
from pgtrain.engine.settings import (
    TrainSettings,
    check_run_config,
    settings_markdown,
    train_defaults,
)
from pgtrain.engine.trainer import AMPTrainer, Trainer

__all__ = [
    "STALL_EXIT_CODE",
    "AMPTrainer",
    "Run",
    "TrainSettings",
    "settings_markdown",
    "train_defaults",
    "add_grouping_arguments",
    "apply_grouping_arguments",
    "build_run",
    "loader_effective_batch",
    "resume_training_state",
    "check_output_dir",
    "check_run_config",
    "collective_timeout",
    "save_config",
    "stall_timeout",
    "train_preemptibly",
    "BatchSizeLRScalingHook",
    "EMAHook",
    "EvalHook",
    "HookBase",
    "IterationTimer",
    "LRSchedulerHook",
    "NonFiniteLossGuard",
    "ParamGroupStatsHook",
    "PeriodicCheckpointer",
    "PeriodicWriter",
    "StallWatchdog",
    "StopSignal",
    "Trainer",
    "UnusedParameterCheck",
    "compile_for_training",
    "create_ddp_model",
    "default_argument_parser",
    "default_setup",
    "default_writers",
    "launch",
    "resolve_device",
    "user_errors_exit",
]
