"""Built-in hooks: timing, LR-schedule stepping, evaluation, writing metrics, non-finite guard."""

import datetime
import logging
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pgtrain.config.schema import setting
from pgtrain.engine.loop.hook_base import HookBase
from pgtrain.engine.run.length import period_setting
from pgtrain.errors import ConfigError, DivergedError
from pgtrain.param_groups import named_groups
from pgtrain.solver.optimizer_modes import eval_mode
from pgtrain.utils import comm
from pgtrain.utils.checks import is_whole
from pgtrain.utils.suggest import listing
from pgtrain.utils.writers import ConsoleWriter, EventWriter, JSONWriter, TensorboardWriter

__all__ = [
    "default_writers",
    "IterationTimer",
    "EvalHook",
    "PeriodicWriter",
    "NonFiniteLossGuard",
    "UnusedParameterCheck",
    "HookSettings",
]

logger = logging.getLogger(__name__)


@dataclass
class HookSettings:
    """What the default hooks read: evaluation and logging periods, the unused-parameter check."""

    eval_period: int | str = period_setting(
        500, "evaluate every `eval_period` iterations (or epochs: '2ep'); 0: only at the end", 0
    )
    log_period: int = setting(20, "write the metrics (every group's LR included) this often", ge=1)
    unused_params: Literal["warn", "error", "off"] = setting(
        "warn",
        "trainable parameters with no gradient in the first iteration: list them once, stop the "
        "run, or do not check",
    )


class IterationTimer(HookBase):
    """Records each iteration's wall time as ``time`` and logs the total at the end."""

    def __init__(self) -> None:
        self._step_start = 0.0
        self._train_start = 0.0

    def before_train(self) -> None:
        self._train_start = time.perf_counter()

    def before_step(self) -> None:
        self._step_start = time.perf_counter()

    def after_step(self) -> None:
        self.trainer.storage.put_scalar("time", time.perf_counter() - self._step_start)

    def after_train(self) -> None:
        done = self.trainer.iter - self.trainer.start_iter
        total = time.perf_counter() - self._train_start
        if done > 0:
            logger.info(
                "Total training time: %s (%d iterations, %.4f s/it)",
                datetime.timedelta(seconds=int(total)),
                done,
                total / done,
            )


class EvalHook(HookBase):
    """Runs `eval_function` every `period` iterations and after the last one.

    The function returns a (nested) dict of numbers, e.g. ``{"top1": 91.2}`` or
    ``{"bbox": {"AP": 40.1}}``; they are recorded flattened (``bbox/AP``) so writers report them.
    """

    def __init__(self, period: int, eval_function: Callable[[], Mapping[str, Any] | None]) -> None:
        if not is_whole(period, at_least=0):
            raise ConfigError(
                f"train.eval_period={period!r} must be a whole number >= 0 (0: evaluate only at "
                "the end)"
            )
        self._period = period
        self._func = eval_function

    def after_step(self) -> None:
        it = self.trainer.iter + 1
        last = it == self.trainer.max_iter
        if getattr(self.trainer, "stop_requested", False) and not last:
            return  # preempted: save and leave; the resumed run evaluates
        if last or (self._period > 0 and it % self._period == 0):
            self._evaluate()

    def _evaluate(self) -> None:
        with eval_mode(getattr(self.trainer, "optimizer", None)):  # schedule-free: the average
            results = self._func() or {}
        flat = _flatten(results)
        for name, value in flat.items():
            if not isinstance(value, int | float) or isinstance(value, bool):
                raise TypeError(f"eval function returned a non-number for '{name}': {value!r}")
            self.trainer.storage.put_scalar(name, value, smoothing_hint=False)
        comm.synchronize()  # ranks leave evaluation together, so none times out in the next step


class PeriodicWriter(HookBase):
    """Calls every writer each `period` iterations, after the last one and at the end."""

    def __init__(self, writers: Sequence[EventWriter], period: int = 20) -> None:
        if not is_whole(period, at_least=1):
            raise ConfigError(f"train.log_period={period!r} must be a positive integer")
        self._writers = list(writers)
        self._period = period
        self._written_iter = -1

    def before_train(self) -> None:
        zero_based = getattr(self.trainer, "resumed_zero_based", False)
        for writer in self._writers:
            if hasattr(writer, "zero_based"):  # a metrics file of the old numbering: renumber it
                writer.zero_based = zero_based
            writer.start(self.trainer.start_iter)

    def after_step(self) -> None:
        it = self.trainer.iter + 1
        if it % self._period == 0 or it == self.trainer.max_iter:
            self._write()

    def after_train(self) -> None:
        # Write what the last partial period recorded (e.g. when an error stopped training).
        if self.trainer.storage.iter > self._written_iter:
            self._write()
        for writer in self._writers:
            writer.close()

    def _write(self) -> None:
        for writer in self._writers:
            writer.write(self.trainer.storage)
        self._written_iter = self.trainer.storage.iter


class NonFiniteLossGuard(HookBase):
    """Stops training, before the optimizer steps, when the loss (or gradient norm) is not finite.

    Raises FloatingPointError naming the iteration and the losses, so no later hook (such as the
    periodic checkpointer) ever sees, let alone saves, weights updated from NaN gradients.
    """

    def after_backward(self) -> None:
        storage = self.trainer.storage
        latest = storage.latest()
        # Under fp16 loss scaling, overflowing gradients are expected: the scaler skips that step.
        scaled = getattr(self.trainer, "grad_scaler", None) is not None
        checked = ["total_loss"] if scaled else ["total_loss", "grad_norm"]
        bad = [
            k
            for k in checked
            if k in latest and latest[k][1] == storage.iter and not math.isfinite(latest[k][0])
        ]
        if bad:
            losses = {k: v for k, (v, it) in latest.items() if "loss" in k and it == storage.iter}
            raise DivergedError(
                f"{bad[0]} became non-finite at iteration {storage.iter + 1}: {losses}. Training "
                "stopped before the optimizer step; checkpoints hold only earlier, finite weights. "
                "Try a lower optimizer.lr, train.clip_grad_norm, or check the data."
            )


def _flatten(results: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in results.items():
        name = f"{prefix}/{key}" if prefix else str(key)
        if isinstance(value, Mapping):
            flat.update(_flatten(value, name))
        else:
            flat[name] = value
    return flat


class UnusedParameterCheck(HookBase):
    """After the first backward of a run, names the trainable parameters that got no gradient.

    Such parameters (an unused branch, a part the loss never reaches) sit in a param group and
    count as trained, but the optimizer skips every tensor whose ``.grad`` is None, so they never
    change. ``mode="warn"`` logs them once, ``"error"`` stops training, ``"off"`` checks nothing.

    Args:
        mode: ``train.unused_params``: "warn", "error" or "off".
    """

    MODES = ("warn", "error", "off")

    def __init__(self, mode: str = "warn") -> None:
        if mode not in self.MODES:
            raise ConfigError(
                f"train.unused_params={mode!r} must be one of {', '.join(map(repr, self.MODES))}"
            )
        self.mode = mode
        self._pending = mode != "off"

    def after_backward(self) -> None:
        if not self._pending:
            return
        self._pending = False
        model = comm.unwrap_model(self.trainer.model)
        unused = [
            name
            for _, group, names in named_groups(self.trainer.optimizer, model)
            for name, p in zip(names, group["params"], strict=True)
            if p.requires_grad and p.grad is None
        ]
        if not unused:
            return
        shown = listing(unused, 8, quote=True)
        message = (
            f"{len(unused)} trainable parameter(s) got no gradient in iteration "
            f"{self.trainer.iter + 1}: {shown}; the loss does not reach them, so they never "
            "change. Freeze them (a rule with frozen=True, or requires_grad=False) or use them"
        )
        if self.mode == "error":
            raise ConfigError(f"{message} (train.unused_params=error)")
        logger.warning("%s; train.unused_params=error makes this an error", message)


def default_writers(
    output_dir: str,
    max_iter: int,
    iters_per_epoch: int | None = None,
    batch: int | None = None,
    *,
    train: Mapping[str, Any] | None = None,
    project: str = "pgtrain",
    table: str = "",
) -> list[EventWriter]:
    """Console, JSON-lines (``metrics.json``) and TensorBoard writers on the main process only;
    with `iters_per_epoch` the console and metrics.json show the epoch next to the iteration,
    with the effective `batch` metrics.json the samples trained. With the run's `train` section,
    the experiment trackers ``train.trackers`` names follow (`pgtrain.utils.trackers`: MLflow,
    W&B), with `project` as their default experiment name and the param-group `table`."""
    if not comm.is_main_process():
        return []
    metrics = os.path.join(output_dir, "metrics.json")
    writers: list[EventWriter] = [
        ConsoleWriter(max_iter, iters_per_epoch=iters_per_epoch),
        JSONWriter(metrics, iters_per_epoch=iters_per_epoch, batch=batch),
        TensorboardWriter(output_dir),
    ]
    if train is not None and train.get("trackers"):
        from pgtrain.utils.trackers import build_trackers

        writers += build_trackers(train, max_iter=max_iter, project=project, table=table)
    return writers
