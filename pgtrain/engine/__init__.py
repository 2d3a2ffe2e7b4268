"""The training engine: trainer, hooks, launch, and what training scripts share."""

from pgtrain.engine.ddp import create_ddp_model
from pgtrain.engine.defaults import (
    default_argument_parser,
    default_setup,
    resolve_device,
    user_errors_exit,
)
from pgtrain.engine.hook_base import HookBase
from pgtrain.engine.hooks import (
    EvalHook,
    IterationTimer,
    LRSchedulerHook,
    NonFiniteLossGuard,
    PeriodicWriter,
)
from pgtrain.engine.launch import launch
from pgtrain.engine.trainer import AMPTrainer, Trainer

__all__ = [
    "AMPTrainer",
    "EvalHook",
    "HookBase",
    "IterationTimer",
    "LRSchedulerHook",
    "NonFiniteLossGuard",
    "PeriodicWriter",
    "Trainer",
    "create_ddp_model",
    "default_argument_parser",
    "default_setup",
    "launch",
    "resolve_device",
    "user_errors_exit",
]
