"""build_optimizer and build_lr_scheduler: instantiate optimizer configs with the run's objects."""

from collections.abc import Collection
from typing import Any

import torch
from omegaconf import DictConfig
from torch import nn

from pgtrain.config import accepts_keyword, check_arguments, instantiate, locate
from pgtrain.errors import ConfigError, PgtrainError
from pgtrain.param_groups import ParamGroups, audit_param_groups

__all__ = ["build_param_groups_from_config", "build_optimizer", "build_lr_scheduler"]


def build_param_groups_from_config(
    cfg: DictConfig, model: nn.Module, *, fresh: Collection[str] | None = None
) -> ParamGroups:
    """Builds the param groups of the ``optimizer`` config `cfg` for `model`.

    ``cfg.params`` is a call such as ``L(build_param_groups)(builder="rules", ...)``; it receives
    ``model`` (and ``fresh``, the names of parameters the initial weights did not provide, if it
    takes them; None: no initial weights were loaded, so "fresh" means nothing), bound in place
    as the run's other objects are. Absent or None means every
    trainable parameter in one group named "default". The groups are always audited, so they
    carry a plan for the report.
    """
    params = cfg.get("params")
    if params is None:
        named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        group = {"params": [p for _, p in named], "param_names": [n for n, _ in named]}
        return audit_param_groups(model, [{**group, "name": "default"}], builder="default")
    if not (isinstance(params, DictConfig) and "_target_" in params):
        raise ConfigError("optimizer.params must be a param-group builder call (LazyCall) or None")
    target = params._target_
    params.model = model
    takes_fresh = accepts_keyword(locate(target) if isinstance(target, str) else target, "fresh")
    if takes_fresh:
        params.fresh = None if fresh is None else sorted(fresh)
    groups = instantiate(params, "optimizer.params")
    return groups if isinstance(groups, ParamGroups) else audit_param_groups(model, groups)


def build_optimizer(
    cfg: DictConfig,
    model: nn.Module,
    *,
    fresh: Collection[str] | None = None,
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
