"""Configs as plain containers: callables, partials, dtypes and enum members as import paths.

`to_plain` is what `LazyConfig` saves and what it normalizes a loaded Python config to, so a config
and its YAML form instantiate to the same objects.
"""

import enum
import functools
from collections.abc import Mapping
from typing import Any

import torch
from omegaconf import DictConfig, ListConfig, OmegaConf

from pgtrain.config.lazy_call import PARTIAL_ARGS, TARGET, _join, locate, target_name
from pgtrain.errors import ConfigError

__all__ = ["to_plain"]


def to_plain(cfg: Any) -> Any:
    """Returns a plain-container copy of a config, unresolved, with callables as import paths.

    A callable value becomes a call of `locate` on its import path; a `functools.partial` value a
    ``functools.partial`` node (``func``, ``_args_`` and its keywords as keys); a torch dtype or
    an enum member a `locate` call too. So the YAML form instantiates to the same objects. A
    partial as a node's ``_target_`` is unfolded: its keywords become the node's keys.
    """
    container = (
        OmegaConf.to_container(cfg, resolve=False)
        if isinstance(cfg, DictConfig | ListConfig)
        else cfg
    )
    return _stringify(container)


def _stringify(node: Any, where: str = "") -> Any:
    if isinstance(node, Mapping):
        node = _unfold_partial_target(node, where)
        return {
            k: _named(v, _join(where, k)) if k == TARGET else _stringify(v, _join(where, k))
            for k, v in node.items()
        }
    if isinstance(node, list | tuple):
        return [_stringify(v, f"{where}[{i}]") for i, v in enumerate(node)]
    if isinstance(node, functools.partial):
        return _partial_node(node, where)
    if isinstance(node, enum.Enum):
        return _located(f"{_named(type(node), where)}.{node.name}")
    if isinstance(node, torch.dtype):
        return _located(str(node))  # "torch.float16"
    if callable(node) and not isinstance(node, str):
        # A callable passed as a value (e.g. norm_layer=nn.BatchNorm2d) is stored as a call that
        # imports it, so the YAML form instantiates to the same object.
        return _located(_named(node, where))
    return node


def _located(name: str) -> dict[str, str]:
    return {TARGET: target_name(locate), "name": name}


def _partial_node(value: functools.partial, where: str) -> dict[str, Any]:
    """``partial(f, 2, eps=1e-3)`` as ``{_target_: functools.partial, func: f, _args_: [2],
    eps: 0.001}``, which `instantiate` builds back."""
    taken = [k for k in ("func", PARTIAL_ARGS) if k in value.keywords]
    if taken:
        raise ConfigError(
            f"{where}: a functools.partial with a keyword named {taken[0]!r} cannot be saved; "
            "use a module-level function that takes it"
        )
    node: dict[str, Any] = {
        TARGET: target_name(functools.partial),
        "func": _stringify(value.func, _join(where, "func")),
    }
    if value.args:
        node[PARTIAL_ARGS] = _stringify(value.args, _join(where, PARTIAL_ARGS))
    node.update({k: _stringify(v, _join(where, k)) for k, v in value.keywords.items()})
    return node


def _unfold_partial_target(node: Mapping[Any, Any], where: str) -> Mapping[Any, Any]:
    """``{_target_: partial(f, eps=1e-3), n: 4}`` as ``{_target_: f, eps: 1e-3, n: 4}`` (the
    node's own keys win, as they do when the partial is called)."""
    target = node.get(TARGET)
    if not isinstance(target, functools.partial):
        return node
    if target.args:
        raise ConfigError(
            f"{_join(where, TARGET)}: a functools.partial with positional arguments cannot be "
            f"a call's target; give its arguments as keywords, e.g. LazyCall("
            f"{target_name(target.func)})(name=...)"
        )
    rest = {k: v for k, v in node.items() if k != TARGET}
    return {TARGET: target.func, **target.keywords, **rest}


def _named(target: Any, where: str) -> str:
    """`target_name`, with the config key in the message when it has no import path."""
    try:
        return target_name(target)
    except ConfigError as e:
        raise ConfigError(f"{where}: {e}" if where else str(e)) from e
