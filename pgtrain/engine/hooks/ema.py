"""EMAHook: an exponential moving average of the model's weights, evaluated and checkpointed.

The average is torch's ``torch.optim.swa_utils.AveragedModel`` (a copy of the model on the
training device, or `device`) with an EMA update: ``ema = decay x ema + (1 - decay) x weights``
after every `period` optimizer steps. With `warmup` the decay starts low and rises to `decay`
(``min(decay, (1 + n) / (10 + n))`` after n updates, the warmup of TensorFlow's and timm's
ModelEma), so early weights do not dominate a short run. Buffers (BatchNorm statistics) are
averaged too (``buffers="average"``) or copied from the model (``"copy"``).

The averaged weights are part of the trainer's checkpoint state (``trainer.hooks.EMAHook``), so a
resumed run continues the same average, bit for bit.
"""

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor, nn
from torch.optim.swa_utils import AveragedModel

from pgtrain.config.schema import setting
from pgtrain.engine.loop.hook_base import HookBase
from pgtrain.engine.strategy.device import device_check
from pgtrain.errors import ConfigError
from pgtrain.utils import comm
from pgtrain.utils.checks import is_real, is_whole

__all__ = ["EMAHook", "EMASettings"]

logger = logging.getLogger(__name__)

_BUFFERS = ("average", "copy")
_DEVICES = "'cpu', 'cuda' or 'cuda:N'"


@dataclass
class EMASettings:
    """``train.ema``: an exponential moving average of the weights, evaluated and saved."""

    enabled: bool = setting(False, "keep an EMA of the weights (saved in every checkpoint)")
    decay: float = setting(0.9998, "the average's decay per update", ge=0, lt=1)
    warmup: bool = setting(True, "raise the decay from about 0.1 to `decay` over the first updates")
    period: int = setting(1, "update the average after every `period` optimizer steps", ge=1)
    buffers: Literal["average", "copy"] = setting(
        "average", "BatchNorm statistics: averaged like the weights, or copied from the model"
    )
    device: str | None = setting(
        None,
        "where the average lives ('cpu' saves GPU memory)",
        null="keep it on the model's",
        check=lambda value: _DEVICES if value == "auto" or device_check(value) else None,
        expects=_DEVICES,
    )
    evaluate: Literal["model", "ema", "both"] = setting(
        "both", "what evaluations report: the model, the average (metrics under ema/), or both"
    )


class EMAHook(HookBase):
    """Keeps an exponential moving average of the model (see the module's docstring).

    Args:
        decay: the EMA decay in [0, 1), e.g. 0.9998 (per update).
        warmup: raise the decay from about 0.1 to `decay` over the first updates.
        period: update after every `period` optimizer steps.
        buffers: "average" (the buffers are averaged like the weights) or "copy" (the average
            model uses the model's current buffers).
        device: where the average lives (None: the model's device; "cpu" saves GPU memory).
    """

    def __init__(
        self,
        decay: float = 0.9998,
        *,
        warmup: bool = True,
        period: int = 1,
        buffers: str = "average",
        device: str | None = None,
    ) -> None:
        if not is_real(decay, at_least=0) or decay >= 1:
            raise ConfigError(f"train.ema.decay={decay!r} must be a number in [0, 1)")
        if not is_whole(period, at_least=1):
            raise ConfigError(f"train.ema.period={period!r} must be a positive whole number")
        if buffers not in _BUFFERS:
            raise ConfigError(f"train.ema.buffers={buffers!r} must be one of {list(_BUFFERS)}")
        self.decay = float(decay)
        self.warmup = bool(warmup)
        self.period = int(period)
        self.buffers = buffers
        self.device = device
        self.averaged: AveragedModel | None = None
        self._pending: dict[str, Any] | None = None

    @property
    def model(self) -> nn.Module:
        """The averaged model (in eval mode), for evaluation."""
        if self.averaged is None:
            raise RuntimeError("the EMA model exists once training started")
        return self.averaged.module

    def current_decay(self, updates: int) -> float:
        """The decay of the update after `updates` earlier ones."""
        if not self.warmup:
            return self.decay
        return min(self.decay, (1 + updates) / (10 + updates))

    def _average(self, averaged: Sequence[Tensor], current: Sequence[Tensor], n: Any) -> None:
        # Called per (device, dtype) group; integer buffers (BatchNorm's counter) are copied.
        if averaged[0].is_floating_point() or averaged[0].is_complex():
            weight = 1.0 - self.current_decay(int(n))
            torch._foreach_lerp_(list(averaged), list(current), weight)
        else:
            torch._foreach_copy_(list(averaged), list(current))

    def before_train(self) -> None:
        model = comm.unwrap_model(self.trainer.model)
        if self.trainer.strategy.sharded:  # the copy would be sharded
            raise ConfigError(
                "train.ema is not available with train.strategy=fsdp yet; use ddp, or turn "
                "train.ema.enabled off"
            )
        if self.averaged is None:
            self.averaged = AveragedModel(
                model,
                device=self.device,
                multi_avg_fn=self._average,
                use_buffers=self.buffers == "average",
            )
            self.averaged.requires_grad_(False)
            self.averaged.eval()
        if self._pending is not None:
            self.averaged.load_state_dict(self._pending)
            self._pending = None

    @torch.no_grad()
    def after_step(self) -> None:
        if (self.trainer.iter + 1) % self.period:
            return
        model = comm.unwrap_model(self.trainer.model)
        self.averaged.update_parameters(model)
        if self.buffers == "copy":
            for mine, theirs in zip(self.model.buffers(), model.buffers(), strict=True):
                mine.copy_(theirs)

    def state_dict(self) -> dict[str, Any]:
        if self.averaged is None:
            return {} if self._pending is None else {"averaged": self._pending}
        return {"averaged": self.averaged.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        averaged = state.get("averaged")
        if averaged is None:
            return
        if self.averaged is None:  # restored before training built the copy: load it then
            self._pending = averaged
        else:
            self.averaged.load_state_dict(averaged)
