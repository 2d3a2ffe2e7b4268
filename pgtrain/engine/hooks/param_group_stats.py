"""ParamGroupStatsHook: per-group gradient norm, weight norm and update-to-weight ratio."""

from dataclasses import dataclass

import torch

from pgtrain.config.schema import setting
from pgtrain.engine.loop.hook_base import HookBase
from pgtrain.param_groups.names import param_group_names
from pgtrain.utils import sharding

__all__ = ["ParamGroupStatsHook", "ParamGroupStatsSettings"]


@dataclass
class ParamGroupStatsSettings:
    """``train.param_group_stats_period``: how often the per-group statistics are recorded."""

    param_group_stats_period: int = setting(
        100, "record each group's grad norm, weight norm and update ratio this often; 0: off", ge=0
    )


class ParamGroupStatsHook(HookBase):
    """Every `period` iterations, records for each param group (by name):

    - ``grad_norm/<group>``: the L2 norm of the group's gradients (after clipping),
    - ``weight_norm/<group>``: the L2 norm of its weights before the step,
    - ``update_ratio/<group>``: ``||w_after - w_before|| / ||w_before||`` of that step.

    These are the numbers that show an undertrained head (the Mask R-CNN fine-tuning case): a
    new mask predictor whose update ratio is orders of magnitude below the others' learns too
    slowly. The weights are copied only on recorded iterations, so the cost elsewhere is one
    modulo.
    """

    def __init__(self, period: int = 100) -> None:
        self._period = period
        self._before: list[list[torch.Tensor]] | None = None

    def _due(self) -> bool:
        it = self.trainer.iter + 1
        return self._period > 0 and (it % self._period == 0 or it == self.trainer.max_iter)

    @torch.no_grad()
    def after_backward(self) -> None:
        if not self._due():
            return
        storage = self.trainer.storage
        groups = self.trainer.optimizer.param_groups
        self._before = []
        for name, group in zip(param_group_names(groups), groups, strict=True):
            params = list(group["params"])
            grads = [p.grad for p in params if p.grad is not None]
            storage.put_scalar(f"grad_norm/{name}", _norm(grads), smoothing_hint=False)
            storage.put_scalar(f"weight_norm/{name}", _norm(params), smoothing_hint=False)
            self._before.append([p.detach().clone() for p in params])

    @torch.no_grad()
    def after_step(self) -> None:
        if self._before is None:
            return
        storage = self.trainer.storage
        groups = self.trainer.optimizer.param_groups
        for name, group, before in zip(
            param_group_names(groups), groups, self._before, strict=True
        ):
            after = [p.detach() for p in group["params"]]
            update = _norm(torch._foreach_sub(after, before)) if after else 0.0
            weight = _norm(before)
            storage.put_scalar(
                f"update_ratio/{name}", update / weight if weight else 0.0, smoothing_hint=False
            )
        self._before = None


def _norm(tensors: list[torch.Tensor]) -> float:
    """The L2 norm of all `tensors` together (0 for none)."""
    if not tensors:
        return 0.0
    norms = torch._foreach_norm([t.detach().float() for t in tensors])
    # Under FSDP the tensors are shards (DTensors): the norm is reduced over the processes.
    return sharding.full_value(torch.linalg.vector_norm(torch.stack(norms)))
