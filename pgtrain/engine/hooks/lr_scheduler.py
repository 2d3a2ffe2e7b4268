"""The hooks that set the LRs: the schedule's step and dynamic batch-size LR scaling."""

import logging
from typing import Any

import torch

from pgtrain.engine.loop.hook_base import HookBase
from pgtrain.param_groups.names import param_group_names
from pgtrain.solver.lr_scaling import BatchSizeLRScaling
from pgtrain.utils import comm

__all__ = ["BatchSizeLRScalingHook", "LRSchedulerHook"]

logger = logging.getLogger(__name__)


class LRSchedulerHook(HookBase):
    """Records every param group's LR as ``lr/<group name>``, then steps the LR scheduler.

    The LR recorded for an iteration is the one its optimizer step used; the scheduler is stepped
    once per iteration, after ``optimizer.step()``. Its state is part of the trainer checkpoint.
    """

    def __init__(self, scheduler: torch.optim.lr_scheduler.LRScheduler | None = None) -> None:
        self.scheduler = scheduler
        self._names: list[str] = []

    def before_train(self) -> None:
        self._names = param_group_names(self.trainer.optimizer.param_groups)

    def after_step(self) -> None:
        storage = self.trainer.storage
        for name, group in zip(self._names, self.trainer.optimizer.param_groups, strict=True):
            storage.put_scalar(f"lr/{name}", group["lr"], smoothing_hint=False)
        if self.scheduler is not None:
            self.scheduler.step()

    def state_dict(self) -> dict[str, Any]:
        return self.scheduler.state_dict() if self.scheduler is not None else {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.scheduler is not None:
            self.scheduler.load_state_dict(state)


class BatchSizeLRScalingHook(HookBase):
    """Rescales every group's LR when the effective batch size changes during training.

    After each step it reads the samples this process trained on (``trainer.last_batch_size``)
    times the number of processes and hands it to a `BatchSizeLRScaling` (batch 64 -> 128 under
    the sqrt rule multiplies each group's LR by 1.414); the change applies from the next
    iteration on and is logged once per change.
    """

    def __init__(self, scaling: BatchSizeLRScaling) -> None:
        self.scaling = scaling

    def after_step(self) -> None:
        batch = self.trainer.last_batch_size * comm.get_world_size()
        message = self.scaling.update(batch) if batch else None
        if message:
            logger.info("Iteration %d: %s", self.trainer.iter + 1, message)  # as the console

    def state_dict(self) -> dict[str, Any]:
        return self.scaling.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.scaling.load_state_dict(state)
