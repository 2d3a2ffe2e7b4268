"""Trainer and AMPTrainer: the training loop (data, forward, backward, clip, step) with hooks."""

import contextlib
import logging
import time
import weakref
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

from pgtrain.config.schema import section, setting
from pgtrain.engine.loop.hook_base import HookBase
from pgtrain.engine.strategy.device import PRECISION_DTYPES
from pgtrain.engine.strategy.strategy import Strategy
from pgtrain.errors import ConfigError
from pgtrain.param_groups.state import (
    load_optimizer_state_by_name,
    optimizer_state_by_name,
    optimizer_state_from_torch,
)
from pgtrain.solver.lr_scaling import effective_batch_size
from pgtrain.solver.optimizer_modes import group_state_keys, train_mode
from pgtrain.utils import comm
from pgtrain.utils.events import EventStorage, event_storage

__all__ = ["AMPSettings", "AMPTrainer", "Trainer", "TrainerSettings"]

logger = logging.getLogger(__name__)


@dataclass
class AMPSettings:
    """``train.amp``: automatic mixed precision (`AMPTrainer`)."""

    enabled: bool = setting(False, "run forward and loss in lower precision")
    precision: Literal["bf16", "fp16"] = setting(
        "bf16", "bf16 on CPU or CUDA; fp16 (with a gradient scaler) on CUDA only"
    )


@dataclass
class TrainerSettings:
    """What the training loop reads: micro-batches per step, gradient clipping, AMP."""

    accumulation: int = setting(
        1, "micro-batches per optimizer step (their gradients add up)", ge=1
    )
    clip_grad_norm: float | None = setting(
        None, "clip the gradients to this global L2 norm", gt=0, null="turn clipping off"
    )
    amp: AMPSettings = section(AMPSettings, "automatic mixed precision")


class Trainer:
    """Runs iterations of: load data, forward to a loss dict, backward, clip, optimizer step.

    Per iteration: ``before_step`` hooks, forward/backward of each micro-batch, gradient clipping,
    ``after_backward`` hooks (final gradients, before the step), optimizer step, ``after_step``.

    The model returns a dict of scalar losses in training mode; their sum is minimised. One
    iteration is one optimizer step over `accumulation` micro-batches (their gradients add up,
    each loss scaled by ``1 / accumulation``; under DDP or FSDP only the last micro-batch
    reduces gradients).

    Args:
        model: the model, already on its device (wrapped in DDP or sharded by FSDP when
            distributed: ``Run.train_model``).
        data_loader: an iterable of batches; it is iterated forever. A loader built by
            `pgtrain.data.build_train_loader` resumes at the right sample.
        optimizer: a torch optimizer.
        accumulation: micro-batches per optimizer step.
        clip_grad_norm: if set, gradients are clipped to this global L2 norm before the step.
        strategy: the run's `Strategy` (``run.strategy``); None: one process or DDP.
    """

    def __init__(
        self,
        model: nn.Module,
        data_loader: Iterable[Any],
        optimizer: torch.optim.Optimizer,
        *,
        accumulation: int = 1,
        clip_grad_norm: float | None = None,
        strategy: Strategy | None = None,
    ) -> None:
        if accumulation < 1:
            raise ConfigError(f"train.accumulation must be >= 1, got {accumulation}")
        self.model = model
        self.data_loader = data_loader
        self.optimizer = optimizer
        self.accumulation = accumulation
        self.clip_grad_norm = clip_grad_norm
        # How the processes share the model (``run.strategy``): no-sync for accumulation, full
        # values of sharded norms; one process or DDP when not given.
        self.strategy = strategy or Strategy()
        self.iter = self.start_iter = self.max_iter = 0
        self.last_batch_size = 0  # samples this process trained on in the last iteration
        # A preemption signal (see `StopSignal`): when any rank has one, every rank finishes the
        # current step, the hooks see `stop_requested` (the checkpointer saves) and training
        # ends after that iteration.
        self.stop_signal: Any = None
        self.stop_requested = False
        self.storage = EventStorage()
        # The run's base LR and weight decay ({"base_lr": ..., "base_weight_decay": ...}), saved
        # with the trainer so a resume can say what changed against the checkpoint.
        self.param_group_bases: dict[str, Any] = {}
        self.resumed_zero_based = False
        # Modules that stay in eval mode while the model trains (the batch norm layers of groups
        # that gradual unfreezing holds: their running statistics do not move).
        self.eval_modules: list[nn.Module] = []
        self._hooks: list[HookBase] = []
        self._data_iter: Iterator[Any] | None = None

    def register_hooks(self, hooks: Iterable[HookBase | None]) -> None:
        """Appends hooks (None entries are skipped); they run in list order."""
        for hook in hooks:
            if hook is None:
                continue
            # A proxy avoids a reference cycle trainer <-> hook.
            hook.trainer = weakref.proxy(self)
            self._hooks.append(hook)

    @property
    def hooks(self) -> list[HookBase]:
        """The registered hooks, in the order they run."""
        return list(self._hooks)

    def train(self, start_iter: int, max_iter: int) -> None:
        """Runs iterations ``start_iter .. max_iter - 1``; `after_train` hooks run even on error."""
        logger.info("Starting training at iteration %d of %d", start_iter + 1, max_iter)
        self.iter = self.start_iter = start_iter
        self.max_iter = max_iter
        self.stop_requested = False
        self.storage = EventStorage(start_iter)
        with event_storage(self.storage):
            try:
                self._call_hooks("before_train")
                self._data_iter = self._start_data()
                for self.iter in range(start_iter, max_iter):
                    self.storage.iter = self.iter
                    self._call_hooks("before_step")
                    self.run_step()
                    self._call_hooks("after_step")
                    if self.stop_requested:
                        logger.warning("Stopping after iteration %d on request", self.iter + 1)
                        break
                # The iterations done are start_iter .. self.iter - 1.
                self.iter = self.iter + 1 if self.stop_requested else max_iter
            finally:
                self._call_hooks("after_train")

    def run_step(self) -> None:
        """Runs one iteration: micro-batches forward/backward, `after_backward`, clip, step."""
        self.model.train()
        for module in self.eval_modules:
            module.eval()
        train_mode(self.optimizer)  # schedule-free optimizers: parameters at the training point
        self.optimizer.zero_grad(set_to_none=True)
        data_time = 0.0
        totals: dict[str, torch.Tensor] = {}
        self.last_batch_size = 0
        for i in range(self.accumulation):
            start = time.perf_counter()
            batch = next(self._data_iter)
            data_time += time.perf_counter() - start
            self.last_batch_size += _batch_len(batch)
            last = i == self.accumulation - 1
            with self._sync_context(last):
                loss_dict = self._forward(batch)
                self._backward(sum(loss_dict.values()) / self.accumulation)
            for name, value in loss_dict.items():
                totals[name] = totals.get(name, 0.0) + value.detach() / self.accumulation
        self._record(totals, data_time)
        self._prepare_grads()
        self._call_hooks("after_backward")
        self._step()

    def _forward(self, batch: Any) -> dict[str, torch.Tensor]:
        loss_dict = self.model(batch)
        if not isinstance(loss_dict, Mapping) or not loss_dict:
            raise TypeError(
                f"in training mode the model must return a non-empty dict of scalar losses, got "
                f"{type(loss_dict).__name__}"
            )
        return dict(loss_dict)

    def _backward(self, loss: torch.Tensor) -> None:
        loss.backward()

    def _prepare_grads(self) -> None:
        self._clip()

    def _step(self) -> None:
        self.optimizer.step()

    def _clip(self) -> None:
        if self.clip_grad_norm is None:
            return
        params = [p for g in self.optimizer.param_groups for p in g["params"] if p.grad is not None]
        # Under FSDP the gradients are shards (DTensors): the norm is reduced over all of them.
        norm = torch.nn.utils.clip_grad_norm_(params, self.clip_grad_norm)
        self.storage.put_scalar("grad_norm", self.strategy.full_value(norm))

    def _sync_context(self, sync: bool) -> contextlib.AbstractContextManager[Any]:
        """Micro-batches but the last skip the gradient reduction (DDP's no_sync; FSDP's
        requires_gradient_sync), so a step with accumulation communicates once."""
        return contextlib.nullcontext() if sync else self.strategy.no_sync(self.model)

    def _record(self, losses: dict[str, torch.Tensor], data_time: float) -> None:
        names = list(losses)
        stop = float(bool(self.stop_signal is not None and self.stop_signal.requested))
        values = torch.stack([*(losses[n].detach().float() for n in names)])
        if comm.get_world_size() > 1:
            # One all-reduce per iteration: every rank logs (and checks) the same mean losses,
            # and learns whether any rank was asked to stop (so all stop at the same step).
            values = torch.cat([values, values.new_tensor([stop])])
            values = values.to(next(self.model.parameters()).device)
            torch.distributed.all_reduce(values)
            stop = float(values[-1].item())
            values = values[:-1] / comm.get_world_size()
        self.stop_requested = stop > 0
        floats = values.tolist()
        self.storage.put_scalar("total_loss", sum(floats))
        for name, value in zip(names, floats, strict=True):
            self.storage.put_scalar(name, value)
        self.storage.put_scalar("data_time", data_time)

    def _start_data(self) -> Iterator[Any]:
        # A resumed run must see the batches an unbroken run would: seek the batch sampler (by
        # batches, e.g. aspect-ratio grouping) or its sampler (by samples).
        batch_sampler = getattr(self.data_loader, "batch_sampler", None)
        sampler = getattr(batch_sampler, "sampler", None)
        skip = self.start_iter * self.accumulation
        if hasattr(batch_sampler, "seek"):
            batch_sampler.seek(skip)
        elif hasattr(sampler, "seek"):
            sampler.seek(skip * batch_sampler.batch_size)
        elif skip:
            logger.warning("The data loader cannot seek: the resumed run starts its data anew")
        return iter(self.data_loader)

    def _call_hooks(self, stage: str) -> None:
        for hook in self._hooks:
            getattr(hook, stage)()

    def state_dict(self) -> dict[str, Any]:
        """Returns what resuming needs: iteration, optimizer state by name, hook states, and
        (when the loader's batch is known) the samples seen and the effective batch."""
        hooks = {}
        for key, hook in self._hook_keys():
            state = hook.state_dict()
            if state:
                hooks[key] = state
        optimizer = optimizer_state_by_name(self.optimizer, comm.unwrap_model(self.model))
        # `iteration`: the index of the last finished one (from 0); `iterations_done` is how the
        # console, metrics.json and checkpoint names count (its presence marks that numbering).
        state = {
            "iteration": self.iter,
            "iterations_done": self.iter + 1,
            "optimizer": optimizer,
            "hooks": hooks,
        }
        if self.param_group_bases:
            state["param_group_bases"] = dict(self.param_group_bases)
        batch = self.effective_batch
        if batch is not None:
            # The position in samples: a resume at another batch converts it exactly (build_run).
            state.update(samples_seen=(self.iter + 1) * batch, batch=batch)
        return state

    @property
    def effective_batch(self) -> int | None:
        """Samples one optimizer step sees: the loader's per-process batch x processes x
        accumulation; None for a loader without a batch sampler (its position is not known)."""
        per_process = getattr(getattr(self.data_loader, "batch_sampler", None), "batch_size", None)
        if not per_process:
            return None
        return effective_batch_size(int(per_process), comm.get_world_size(), self.accumulation)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restores `state_dict`'s output; hooks missing from the checkpoint keep their state.

        Optimizer state is restored by parameter name into the current groups, whose
        hyperparameters (from the current config) stay: a resume may change the grouping.
        """
        self.iter = state["iteration"]
        # A checkpoint of the old numbering: its run's metrics.json counts iterations from 0.
        self.resumed_zero_based = "iterations_done" not in state
        saved = state["optimizer"]
        if "param_groups" in saved:  # a torch optimizer.state_dict() (keyed by position)
            names = [n for n, _ in comm.unwrap_model(self.model).named_parameters()]
            saved = optimizer_state_from_torch(saved, names)
        load_optimizer_state_by_name(
            self.optimizer,
            saved,
            comm.unwrap_model(self.model),
            group_state=group_state_keys(self.optimizer),
        )
        for key, hook in self._hook_keys():
            if key in state.get("hooks", {}):
                hook.load_state_dict(state["hooks"][key])

    def _hook_keys(self) -> list[tuple[str, HookBase]]:
        """Each hook's key in checkpoints: its class name, then ``#2``, ``#3`` for repeats."""
        keys, seen = [], {}
        for hook in self._hooks:
            name = type(hook).__qualname__
            seen[name] = seen.get(name, 0) + 1
            keys.append((name if seen[name] == 1 else f"{name}#{seen[name]}", hook))
        return keys


def _batch_len(batch: Any) -> int:
    """Samples in a batch: the first dimension of its first tensor (a dict of tensors, or a
    collated ``(inputs, targets)`` pair), or the length of a list of per-sample items."""
    if isinstance(batch, list | tuple):
        first = batch[0] if batch else None
        if isinstance(first, torch.Tensor):  # collated (inputs, targets)
            return int(first.shape[0]) if first.ndim else 0
        if isinstance(first, list | tuple):  # (images, targets) of per-sample items
            return len(first)
        return len(batch)  # per-sample items (dicts)
    if isinstance(batch, Mapping):
        batch = next(iter(batch.values()), None)
    return int(batch.shape[0]) if isinstance(batch, torch.Tensor) and batch.ndim else 0


class AMPTrainer(Trainer):
    """A Trainer with automatic mixed precision.

    ``precision="bf16"`` autocasts to bfloat16 (CPU or CUDA, no loss scaling needed);
    ``"fp16"`` autocasts to float16 on CUDA with a GradScaler (its state is checkpointed).
    """

    def __init__(
        self,
        model: nn.Module,
        data_loader: Iterable[Any],
        optimizer: torch.optim.Optimizer,
        *,
        precision: str = "bf16",
        accumulation: int = 1,
        clip_grad_norm: float | None = None,
        strategy: Strategy | None = None,
    ) -> None:
        super().__init__(
            model,
            data_loader,
            optimizer,
            accumulation=accumulation,
            clip_grad_norm=clip_grad_norm,
            strategy=strategy,
        )
        if precision not in ("bf16", "fp16"):
            raise ConfigError(f"train.amp.precision must be 'bf16' or 'fp16', got '{precision}'")
        self.device_type = next(model.parameters()).device.type
        if precision == "fp16" and self.device_type != "cuda":
            raise ConfigError("train.amp.precision=fp16 needs CUDA; use bf16 on the CPU")
        self.dtype = PRECISION_DTYPES[precision]
        self.grad_scaler = torch.amp.GradScaler("cuda") if precision == "fp16" else None

    def _forward(self, batch: Any) -> dict[str, torch.Tensor]:
        with torch.autocast(self.device_type, dtype=self.dtype):
            loss_dict = super()._forward(batch)
        return {k: v.float() for k, v in loss_dict.items()}

    def _backward(self, loss: torch.Tensor) -> None:
        if self.grad_scaler is None:
            loss.backward()
        else:
            self.grad_scaler.scale(loss).backward()

    def _prepare_grads(self) -> None:
        if self.grad_scaler is not None:
            self.grad_scaler.unscale_(self.optimizer)  # clip the true gradients, not scaled ones
        self._clip()

    def _step(self) -> None:
        if self.grad_scaler is None:
            self.optimizer.step()
            return
        self.grad_scaler.step(self.optimizer)  # skips the step when gradients overflowed
        self.grad_scaler.update()

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        if self.grad_scaler is not None:
            state["grad_scaler"] = self.grad_scaler.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        if self.grad_scaler is not None and "grad_scaler" in state:
            self.grad_scaler.load_state_dict(state["grad_scaler"])
