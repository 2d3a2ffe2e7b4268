"""Audit: every trainable parameter in exactly one group, nothing the model does not own."""

from collections.abc import Iterable, Mapping
from itertools import repeat
from typing import Any

import torch
from torch import nn

from pgtrain.errors import ConfigError
from pgtrain.param_groups.model_params import ModelParams, collect_model_params
from pgtrain.param_groups.names import param_group_names
from pgtrain.param_groups.record import BuildRecord, ParamDecision, ParamGroups
from pgtrain.utils.suggest import listing

__all__ = ["audit_param_groups", "builder_source", "named_groups"]

_SHOWN = 5  # names listed in an error before "... and N more"


def audit_param_groups(
    model: nn.Module,
    groups: Any,
    *,
    builder: str = "groups",
    params: ModelParams | None = None,
) -> ParamGroups:
    """Checks param groups against `model` and returns them normalized, with names filled in.

    Accepts what ``torch.optim`` accepts: a list (or generator) of group dicts, or of parameters
    (one group); a group's ``params`` may be a tensor, a list or a generator (read exactly once,
    so the exhausted-generator pitfall cannot happen) of tensors or ``(name, tensor)`` pairs.
    Each group gets ``param_names`` (the canonical names) and a ``name`` (``group{i}`` if none).
    Groups from a builder keep their record; others get one derived from the groups.

    Raises:
        ConfigError: a tensor that is not a parameter of `model`; a parameter placed twice (also
            through a tied name); ``param_names`` that do not name the group's tensors; a
            trainable parameter in no group (unless the builder froze it on purpose); a group
            with no parameters (e.g. a generator passed to two groups).
    """
    params = params or collect_model_params(model)
    record = groups.record if isinstance(groups, ParamGroups) else None
    normalized = [_normalize(g, i) for i, g in enumerate(_read_groups(groups))]
    placed: dict[int, str] = {}
    for group in normalized:
        group["param_names"] = _place(group, params, placed)
    missing = []
    if len(placed) < len(params.names):  # else every parameter is placed
        excluded = {n for n, d in record.decisions.items() if d.frozen} if record else set()
        missing = [
            n
            for i, n in enumerate(params.names)
            if i not in placed and params.tensors[i].requires_grad and n not in excluded
        ]
    if missing:
        raise ConfigError(
            f"{len(missing)} trainable parameter(s) are in no param group: {_some(missing)}; add "
            "them to a group, freeze them with a rule (frozen=True) or set requires_grad=False"
        )
    if record is None:
        record = _record_from_groups(builder, normalized, params, placed)
    record.aliases = {params.names[i]: list(a) for i, a in params.aliases.items()}
    return ParamGroups(normalized, record)


def _read_groups(groups: Any) -> list[dict[str, Any]]:
    if isinstance(groups, torch.Tensor | Mapping):
        groups = [groups]
    if isinstance(groups, str) or not isinstance(groups, Iterable):
        raise ConfigError(
            f"param groups must be a list of dicts or of parameters, got {type(groups).__name__}"
        )
    items = list(groups)  # a generator is read here, once
    if not items:
        raise ConfigError("param groups are empty: the optimizer would have nothing to train")
    if all(not isinstance(item, Mapping) for item in items):
        return [{"params": items}]  # plain parameters, as in SGD(model.parameters())
    for i, item in enumerate(items):
        if not isinstance(item, Mapping) or "params" not in item:
            raise ConfigError(
                f"param group {i} must be a dict with a 'params' key, got "
                f"{type(item).__name__}; do not mix dicts and tensors"
            )
    return [dict(item) for item in items]


def _normalize(group: dict[str, Any], i: int) -> dict[str, Any]:
    group.setdefault("name", f"group{i}")
    entries = group["params"]
    if isinstance(entries, torch.Tensor):
        entries = [entries]
    elif isinstance(entries, set | frozenset | Mapping):
        raise ConfigError(
            f"param group '{group['name']}': 'params' must be an ordered list, got a "
            f"{type(entries).__name__} (its order changes between runs)"
        )
    else:
        entries = list(entries)
    if not entries:
        raise ConfigError(
            f"param group '{group['name']}' has no parameters; if one generator (such as "
            "model.parameters()) was passed to two groups, the first group used it up: pass "
            "lists, or let a param-group builder make the groups"
        )
    if all(isinstance(e, tuple) and len(e) == 2 for e in entries):
        group.setdefault("param_names", [str(e[0]) for e in entries])
        entries = [e[1] for e in entries]
    group["params"] = entries
    return group


def _place(group: dict[str, Any], params: ModelParams, placed: dict[int, str]) -> list[str]:
    """Finds each tensor of `group` in the model; returns the canonical names, in group order."""
    gname = group["name"]
    tensors = group["params"]
    given = group.get("param_names")
    if given is not None and len(given) != len(tensors):
        raise ConfigError(
            f"param group '{gname}' has {len(tensors)} params but {len(given)} param_names"
        )
    # Every check at once, on the lists (a parameter list holds each tensor alive, so an id
    # found is that very tensor); anything amiss is found and named by the walk below.
    indices = list(map(params.index_of_tensor.get, map(id, tensors)))
    if (
        None not in indices
        and len(set(indices)) == len(indices)
        and placed.keys().isdisjoint(indices)
        and (given is None or list(map(params.index_of_name.get, map(str, given))) == indices)
    ):
        placed.update(zip(indices, repeat(gname)))
        return list(map(params.names.__getitem__, indices))
    return _place_each(gname, tensors, given, params, placed)


def _place_each(
    gname: str, tensors: list[Any], given: Any, params: ModelParams, placed: dict[int, str]
) -> list[str]:
    """`_place` one tensor at a time, raising at the first that is wrong."""
    names = []
    for k, tensor in enumerate(tensors):
        if not isinstance(tensor, torch.Tensor):
            raise ConfigError(
                f"param group '{gname}' holds a {type(tensor).__name__}, not a parameter tensor"
            )
        index = params.index_of_tensor.get(id(tensor))
        if index is None:
            raise ConfigError(
                f"param group '{gname}' holds a tensor of shape {tuple(tensor.shape)} that is not "
                "a parameter of the model (the optimizer would silently never update it); remove "
                "it, or register it on the model with nn.Parameter"
            )
        name = params.names[index]
        if given is not None and params.index_of_name.get(str(given[k])) != index:
            raise ConfigError(
                f"param group '{gname}': param_names[{k}] is '{given[k]}' but the "
                f"tensor there is the model's '{name}'"
            )
        if index in placed:
            also = params.aliases.get(index)
            tied = f" (tied: also named {', '.join(also)})" if also else ""
            raise ConfigError(
                f"parameter '{name}'{tied} is in param group '{placed[index]}' and "
                f"again in '{gname}'; place each parameter once"
            )
        placed[index] = gname
        names.append(name)
    return names


def _record_from_groups(
    builder: str, groups: list[dict[str, Any]], params: ModelParams, placed: dict[int, str]
) -> BuildRecord:
    """Describes hand-made groups per parameter, so reports work the same for them."""
    record = BuildRecord(
        builder,
        notes=[f"groups made by '{builder}' directly: no rules, the values are the builder's own"],
    )
    extra = {k for g in groups for k in g} - {
        "params",
        "param_names",
        "name",
        "lr",
        "lr_scale",
        "weight_decay",
        "rules",
    }
    by_index = {}
    for group in groups:
        options = {k: group[k] for k in extra if k in group}
        # What the groups set themselves is their provenance: "set by builder 'name'".
        applied = [
            (builder_source(builder), k, group[k]) for k in ("lr", "weight_decay") if k in group
        ]
        for name in group["param_names"]:
            by_index[params.index_of_name[name]] = ParamDecision(
                name,
                (),
                group["name"],
                lr=float(group.get("lr", float("nan"))),
                lr_scale=float(group.get("lr_scale", 1.0)),
                weight_decay=float(group.get("weight_decay", float("nan"))),
                options=options,
                applied=list(applied),
            )
    decisions = {}
    for i, name in enumerate(params.names):
        decision = by_index.get(i) or ParamDecision(name, (), "", frozen=True)
        decision.shape = tuple(params.tensors[i].shape)
        decisions[name] = decision
    record.decisions = decisions
    return record


def builder_source(builder: str) -> str:
    """The provenance source of a value a builder's groups set themselves (no rule behind it)."""
    return f"builder '{builder}'"


def named_groups(
    groups: Any, model: nn.Module | None = None
) -> list[tuple[str, Mapping[str, Any], list[str]]]:
    """Returns ``(display name, group, parameter names)`` for builder groups or an optimizer's.

    `groups` is a list of group dicts or a ``torch.optim.Optimizer``. Names come from each group's
    ``param_names``; groups without them are named through `model` by tensor identity (as a
    param-group visualizer does). Display names are `param_group_names`'.

    Raises:
        ConfigError: a group has no ``param_names`` and no `model` was given, or holds a tensor
            the model does not own.
    """
    if isinstance(groups, torch.optim.Optimizer):
        groups = groups.param_groups
    by_id = None
    result = []
    for i, (display, group) in enumerate(zip(param_group_names(groups), groups, strict=True)):
        names = group.get("param_names")
        if names is None:
            if model is None:
                raise ConfigError(
                    f"param group {i} has no 'param_names'; pass the model to name its parameters"
                )
            if by_id is None:
                inventory = collect_model_params(model)
                by_id = {id(t): n for t, n in zip(inventory.tensors, inventory.names, strict=True)}
            names = [
                by_id.get(id(p)) or f"<not in model: {tuple(p.shape)}>" for p in group["params"]
            ]
        result.append((display, group, list(names)))
    return result


def _some(names: list[str]) -> str:
    return listing(names, _SHOWN, quote=True)
