"""The training engine, in four rooms:

- ``run/``: a config becomes a run (`build_run`), its settings (`check_run_config`), its length,
  resuming, evaluation, and the entry path every tool shares (`prepare_run`, `default_setup`);
- ``strategy/``: where and how the model runs (device, DDP, FSDP2, compile);
- ``loop/`` and ``hooks/``: the training loop and the hooks that run around each step;
- ``processes/``: launching processes, preemption and stall watching, Slurm.
"""

from pgtrain.checkpoint.output_dir import check_output_dir
from pgtrain.engine.hooks import *  # noqa: F403  (every hook, default_hooks, default_writers)
from pgtrain.engine.hooks import __all__ as _HOOKS
from pgtrain.engine.loop.hook_base import HookBase
from pgtrain.engine.loop.trainer import AMPTrainer, Trainer
from pgtrain.engine.processes.launch import launch
from pgtrain.engine.processes.preemption import (
    STALL_EXIT_CODE,
    StallWatchdog,
    StopSignal,
    train_preemptibly,
)
from pgtrain.engine.run.build import (
    Run,
    build_run,
    load_model,
    loader_effective_batch,
    resume_training_state,
)
from pgtrain.engine.run.entry import (
    RunRequest,
    add_grouping_arguments,
    apply_grouping_arguments,
    default_argument_parser,
    default_setup,
    prepare_run,
    save_config,
    user_errors_exit,
)
from pgtrain.engine.run.evaluate import model_with_weights, require_whole_fit
from pgtrain.engine.run.settings import (
    TrainSettings,
    check_run_config,
    settings_markdown,
    train_defaults,
)
from pgtrain.engine.strategy.compile import compile_for_training
from pgtrain.engine.strategy.ddp import create_ddp_model
from pgtrain.engine.strategy.device import resolve_device
from pgtrain.engine.strategy.strategy import Strategy

__all__ = [
    *_HOOKS,
    "STALL_EXIT_CODE",
    "AMPTrainer",
    "Run",
    "RunRequest",
    "prepare_run",
    "TrainSettings",
    "settings_markdown",
    "train_defaults",
    "add_grouping_arguments",
    "apply_grouping_arguments",
    "build_run",
    "load_model",
    "model_with_weights",
    "require_whole_fit",
    "loader_effective_batch",
    "resume_training_state",
    "check_output_dir",
    "check_run_config",
    "save_config",
    "Strategy",
    "train_preemptibly",
    "HookBase",
    "StallWatchdog",
    "StopSignal",
    "Trainer",
    "compile_for_training",
    "create_ddp_model",
    "default_argument_parser",
    "default_setup",
    "launch",
    "resolve_device",
    "user_errors_exit",
]
