"""build_optimizer and build_lr_scheduler: instantiate optimizer configs with the run's objects."""

from collections.abc import Collection
from typing import Any

import torch
from omegaconf import DictConfig
from torch import nn

from pgtrain.config import accepts_keyword, check_arguments, instantiate, locate
from pgtrain.errors import ConfigError, PgtrainError
from pgtrain.param_groups import ParamGroups, audit_param_groups
from pgtrain.param_groups.names import param_group_names

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
    carry a record for the report.
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
    _check_routes(groups, optimizer_cls)
    try:
        optimizer = optimizer_cls(groups, **kwargs)
    except PgtrainError:
        raise
    except Exception as e:
        raise ConfigError(f"optimizer: {type(e).__name__}: {e}") from e
    _check_ranges(optimizer, kwargs)
    return optimizer


def _check_routes(groups: list[dict[str, Any]], optimizer_cls: Any) -> None:
    """Groups routed to an algorithm (the ``muon`` builder, an ``optimizer`` rule) need a
    hybrid optimizer: a plain one would ignore the route and update everything its own way."""
    from pgtrain.solver.hybrid import HybridOptimizer

    routed = [n for n, g in zip(param_group_names(groups), groups, strict=True) if "optimizer" in g]
    hybrid = isinstance(optimizer_cls, type) and issubclass(optimizer_cls, HybridOptimizer)
    if routed and not hybrid:
        name = getattr(optimizer_cls, "__name__", str(optimizer_cls))
        raise ConfigError(
            f"optimizer: the param groups route parameters to Muon / AdamW (groups "
            f"{', '.join(map(str, routed[:3]))}), which {name} would ignore; use "
            "pgtrain.solver.MuonAdamW (configs/common/optim.py: MuonAdamW)"
        )


# Values torch accepts but that make training misbehave (momentum 2 diverges at once).
_RANGES = {"momentum": (0.0, 1.0, False), "dampening": (0.0, 1.0, True)}


def _check_ranges(optimizer: torch.optim.Optimizer, kwargs: dict[str, Any]) -> None:
    """Refuses momentum outside [0, 1), betas outside [0, 1), negative lr / weight decay / eps."""
    for group in optimizer.param_groups:
        where = "optimizer" if "name" not in group else f"param group '{group['name']}'"
        for key, value in group.items():
            if isinstance(value, torch.Tensor) or isinstance(value, bool):
                continue
            bad = None
            if key in _RANGES and isinstance(value, int | float):
                low, high, closed = _RANGES[key]
                if not (low <= value < high or (closed and value == high)):
                    bad = f"in [{low:g}, {high:g}{']' if closed else ')'}"
            elif key == "betas" and isinstance(value, tuple | list):
                if not all(isinstance(b, int | float) and 0 <= b < 1 for b in value):
                    bad = "a pair of numbers in [0, 1)"
            elif key in ("lr", "weight_decay", "eps") and isinstance(value, int | float):
                if value < 0:
                    bad = ">= 0"
            if bad:
                name = f"optimizer.{key}" if kwargs.get(key) == value else f"{where} {key}"
                raise ConfigError(f"{name}={value!r} must be {bad}")


def build_lr_scheduler(
    cfg: DictConfig | None, optimizer: torch.optim.Optimizer
) -> torch.optim.lr_scheduler.LRScheduler | None:
    """Instantiates the ``lr_scheduler`` config with `optimizer` bound; None stays None."""
    if cfg is None:
        return None
    cfg.optimizer = optimizer
    return instantiate(cfg, "lr_scheduler")
