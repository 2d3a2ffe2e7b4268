"""build_optimizer and build_lr_scheduler: instantiate optimizer configs with the run's objects."""

from collections.abc import Collection
from typing import Any

import torch
from omegaconf import DictConfig
from torch import nn

from pgtrain.config import accepts_keyword, check_arguments, instantiate, locate
from pgtrain.errors import ConfigError, PgtrainError

__all__ = ["build_param_groups_from_config", "build_optimizer", "build_lr_scheduler"]


def build_param_groups_from_config(
    cfg: DictConfig, model: nn.Module, *, fresh: Collection[str] = ()
) -> list[dict[str, Any]]:
    """Builds the param groups of the ``optimizer`` config `cfg` for `model`.

    ``cfg.params`` is a call such as ``L(build_param_groups)(builder="rules", ...)``; it receives
    ``model`` (and ``fresh``, the names of parameters the initial checkpoint did not provide, if
    it takes them), bound in place as the run's other objects are. Absent or None means every
    trainable parameter in one group named "default".
    """
    params = cfg.get("params")
    if params is None:
        named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        return [
            {
                "params": [p for _, p in named],
                "param_names": [n for n, _ in named],
                "name": "default",
            }
        ]
    if not (isinstance(params, DictConfig) and "_target_" in params):
        raise ConfigError("optimizer.params must be a param-group builder call (LazyCall) or None")
    target = params._target_
    params.model = model
    if accepts_keyword(locate(target) if isinstance(target, str) else target, "fresh"):
        params.fresh = sorted(fresh)
    return instantiate(params, "optimizer.params")


def build_optimizer(
    cfg: DictConfig,
    model: nn.Module,
    *,
    fresh: Collection[str] = (),
    groups: list[dict[str, Any]] | None = None,
) -> torch.optim.Optimizer:
    """Instantiates the ``optimizer`` config over `groups` (built from ``cfg.params`` if None)."""
    if groups is None:
        groups = build_param_groups_from_config(cfg, model, fresh=fresh)
    target = cfg._target_
    optimizer_cls = locate(target) if isinstance(target, str) else target
    kwargs = {
        str(k): instantiate(cfg[k], f"optimizer.{k}")
        for k in cfg
        if k not in ("_target_", "params")
    }
    check_arguments(optimizer_cls, {"params": groups, **kwargs}, "optimizer")
    try:
        return optimizer_cls(groups, **kwargs)
    except PgtrainError:
        raise
    except Exception as e:
        raise ConfigError(f"optimizer: {type(e).__name__}: {e}") from e


def build_lr_scheduler(
    cfg: DictConfig | None, optimizer: torch.optim.Optimizer
) -> torch.optim.lr_scheduler.LRScheduler | None:
    """Instantiates the ``lr_scheduler`` config with `optimizer` bound; None stays None."""
    if cfg is None:
        return None
    cfg.optimizer = optimizer
    return instantiate(cfg, "lr_scheduler")
