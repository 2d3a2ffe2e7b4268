"""LRSweepHook: the LR range test's sweep, one factor on every group's configured LR at once."""

import math
from collections.abc import Sequence

from pgtrain.engine.loop.hook_base import HookBase
from pgtrain.param_groups.names import param_group_names
from pgtrain.solver.lr_range import diverged, smoothed

__all__ = ["LRSweepHook"]


class LRSweepHook(HookBase):
    """Before iteration i, sets every group's LR to its configured LR (``initial_lr``, batch-size
    scaling included) x ``factors[i]``, so the groups keep their ratios; after it, records the
    loss and each group's gradient norm (register it after a `ParamGroupStatsHook` of period 1)
    and stops the run once the smoothed loss has diverged.

    Attributes:
        losses: the loss of each iteration run.
        grad_norms: ``{group: [gradient norm of each iteration]}``.
    """

    def __init__(self, factors: Sequence[float], lr_factor: float = 1.0) -> None:
        self.factors, self.lr_factor = list(factors), lr_factor
        self.losses: list[float] = []
        self.grad_norms: dict[str, list[float]] = {}
        self._initial: list[float] = []

    def before_train(self) -> None:
        groups = self.trainer.optimizer.param_groups
        self._initial = [float(g.get("initial_lr", g["lr"])) for g in groups]
        self.grad_norms = {name: [] for name in param_group_names(groups)}

    def before_step(self) -> None:
        factor = self.factors[self.trainer.iter] * self.lr_factor
        for group, lr in zip(self.trainer.optimizer.param_groups, self._initial, strict=True):
            group["lr"] = lr * factor

    def after_step(self) -> None:
        latest = self.trainer.storage.latest()
        self.losses.append(float(latest["total_loss"][0]))
        for name, norms in self.grad_norms.items():
            value = latest.get(f"grad_norm/{name}")
            norms.append(float(value[0]) if value else math.nan)
        if diverged(smoothed(self.losses), self.losses):
            self.trainer.stop_requested = True  # this iteration is the last
