"""The hooks a run trains with, in one list: the built-in ones in their order, then the config's
own (``hooks``: LazyCall nodes of `HookBase` subclasses, as mmengine's ``custom_hooks``)."""

import functools
from collections.abc import Callable
from typing import Any

from omegaconf import DictConfig, ListConfig

from pgtrain.config import instantiate
from pgtrain.config.lazy_call import TARGET, locate
from pgtrain.engine.hooks import basic, checkpoint, ema, lr_scheduler, param_group_stats, unfreeze
from pgtrain.engine.loop.hook_base import HookBase
from pgtrain.errors import ConfigError
from pgtrain.utils import comm, trackers

__all__ = ["check_config_hooks", "config_hooks", "default_hooks"]


def default_hooks(run: Any, evaluate: Callable[..., dict] | None = None) -> list[HookBase | None]:
    """The hooks of `run` (`pgtrain.engine.build_run`), in the order they run (the comments say
    why); None where a hook is off. `evaluate(cfg, model, ema, which, lockstep)` evaluates
    (`pgtrain.engine.run.evaluate.evaluate`); None: no evaluation."""
    train = run.cfg.train  # lengths and periods in iterations (epochs resolved by build_run)
    ema_cfg = dict(train.get("ema") or {})
    averager = None
    if ema_cfg.get("enabled"):
        options = {k: v for k, v in ema_cfg.items() if k not in ("enabled", "evaluate")}
        averager = ema.EMAHook(**options)
    test = None
    if evaluate is not None:
        which, lockstep = ema_cfg.get("evaluate", "both"), run.strategy.lockstep_eval
        test = functools.partial(evaluate, run.cfg, run.model, averager, which, lockstep)
    tracked = bool(train.get("trackers"))  # MLflow / W&B: they record the param-group table
    writers = basic.default_writers(
        train.output_dir,
        train.max_iter,
        train.iters_per_epoch,
        run.effective_batch,
        train=train,
        project=trackers.project_name(run.cfg) if tracked else "pgtrain",
        table=run.table() if tracked and comm.is_main_process() else "",
    )
    if test is not None and writers and train.get("prediction_images", 0):
        # After each evaluation, a detector's predictions on a few validation images go to
        # TensorBoard and the trackers.
        images = trackers.PredictionImages(run.cfg, run.model, train.prediction_images)
        test = trackers.with_prediction_images(test, images, writers)
    unfreezing = None
    if run.unfreezing is not None:
        unfreezing = unfreeze.GradualUnfreezing(
            run.unfreezing, run.groups, run.scheduler, train.unfreeze.norm_eval
        )
    return [
        unfreezing,  # which groups train this step: before anything reads the gradients
        basic.IterationTimer(),
        # after_backward: stops before the optimizer steps on a NaN loss
        basic.NonFiniteLossGuard(),
        basic.UnusedParameterCheck(train.get("unused_params", "warn")),  # after the first backward
        # grads and weights around the step
        param_group_stats.ParamGroupStatsHook(train.param_group_stats_period),
        # records the LRs this step used, then steps the schedule
        lr_scheduler.LRSchedulerHook(run.scheduler),
        # Rescales LRs for the next step when the batch size changed (after the schedule step).
        lr_scheduler.BatchSizeLRScalingHook(run.lr_scaling) if train.lr_scaling.dynamic else None,
        averager,  # averages the weights of the step that just ended
        *config_hooks(run.cfg),  # the config's own: after the step's state changes, saved below
        # Saves after the scheduler stepped: the saved state is that of the next iteration.
        checkpoint.PeriodicCheckpointer(
            run.checkpointer, train.checkpoint.period, max_iter=train.max_iter
        ),
        basic.EvalHook(train.eval_period, test) if test is not None else None,
        basic.PeriodicWriter(writers, train.log_period),  # last: this step's eval metrics land too
    ]


def check_config_hooks(cfg: Any) -> None:
    """Checks the config's own hooks without building them (`check_run_config` calls it, before
    any model or folder exists): ``hooks`` is a list of LazyCall nodes of `HookBase` subclasses
    (or of functions that return one).

    Raises:
        ConfigError: one line naming ``hooks`` or the entry (``hooks.1``) and the fix.
    """
    nodes = cfg.get("hooks")
    if nodes is None:
        return
    if not isinstance(nodes, ListConfig | list | tuple):
        raise ConfigError(f"hooks: {nodes!r} must be a list of hooks, e.g. [L(MyHook)(period=10)]")
    for i, node in enumerate(nodes):
        target = node.get(TARGET) if isinstance(node, DictConfig | dict) else None
        if target is None:
            shown = getattr(node, "__name__", repr(node))
            raise ConfigError(
                f"hooks.{i}: {shown} is not a hook call; give L(MyHook)(...) with the hook class "
                "(a subclass of pgtrain.engine.HookBase) and its arguments"
            )
        target = locate(target) if isinstance(target, str) else target
        if isinstance(target, type) and not issubclass(target, HookBase):
            raise ConfigError(
                f"hooks.{i}: {target.__name__} is not a hook; give a subclass of "
                "pgtrain.engine.HookBase (L(MyHook)(...))"
            )


def config_hooks(cfg: Any) -> list[HookBase]:
    """The config's own hooks (``hooks``, a list of LazyCall nodes), instantiated.

    Raises:
        ConfigError: what `check_config_hooks` refuses, or an entry (a function) that built
            something other than a `HookBase`.
    """
    check_config_hooks(cfg)
    hooks = []
    for i, node in enumerate(cfg.get("hooks") or []):
        hook = instantiate(node, f"hooks.{i}")
        if not isinstance(hook, HookBase):
            raise ConfigError(
                f"hooks.{i}: {type(hook).__name__} is not a hook; give a subclass of "
                "pgtrain.engine.HookBase (L(MyHook)(...))"
            )
        hooks.append(hook)
    return hooks
