"""build_optimizer and build_lr_scheduler: instantiate optimizer configs with the run's objects."""

import inspect
from collections.abc import Collection

import torch
from omegaconf import DictConfig
from torch import nn

from pgtrain.config import LazyCall, instantiate, locate
from pgtrain.errors import ConfigError

__all__ = ["build_optimizer", "build_lr_scheduler"]


def build_optimizer(
    cfg: DictConfig, model: nn.Module, *, fresh: Collection[str] = ()
) -> torch.optim.Optimizer:
    """Instantiates the ``optimizer`` config with `model` bound to its param-group builder.

    ``cfg.params`` is either a call such as ``L(build_param_groups)(builder="rules", ...)``, which
    receives ``model`` (and ``fresh``, the names of parameters the initial checkpoint did not
    provide, if it takes them), or absent/None, meaning every trainable parameter in one group.
    The config node is edited in place, as the run's other objects are bound at run time.
    """
    params = cfg.get("params")
    if isinstance(params, DictConfig) and "_target_" in params:
        accepted = _parameters(params._target_)
        params.model = model
        if "fresh" in accepted or "kwargs" in accepted:
            params.fresh = sorted(fresh)
    elif params is None:
        cfg.params = LazyCall(_one_group)(model=model)
    else:
        raise ConfigError("optimizer.params must be a param-group builder call (LazyCall) or None")
    return instantiate(cfg, "optimizer")


def build_lr_scheduler(
    cfg: DictConfig | None, optimizer: torch.optim.Optimizer
) -> torch.optim.lr_scheduler.LRScheduler | None:
    """Instantiates the ``lr_scheduler`` config with `optimizer` bound; None stays None."""
    if cfg is None:
        return None
    cfg.optimizer = optimizer
    return instantiate(cfg, "lr_scheduler")


def _one_group(model: nn.Module) -> list[dict]:
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    return [{"params": [p for _, p in named], "param_names": [n for n, _ in named], "name": "all"}]


def _parameters(target: object) -> list[str]:
    fn = locate(target) if isinstance(target, str) else target
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return []
    return ["kwargs" if p.kind is p.VAR_KEYWORD else n for n, p in params.items()]
