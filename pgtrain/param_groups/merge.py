"""Merge: parameters with identical hyperparameters (and label) become one param group."""

from collections.abc import Sequence
from typing import Any

import torch

from pgtrain.param_groups.names import param_group_names
from pgtrain.param_groups.record import ParamDecision

__all__ = ["merge_param_groups"]

_SHORT = {"weight_decay": "wd", "lr_scale": "x"}


def merge_param_groups(
    decisions: Sequence[ParamDecision],
    tensors: Sequence[torch.Tensor],
    *,
    merge_labels: bool = False,
) -> list[dict[str, Any]]:
    """Merges per-parameter decisions into torch param groups; frozen parameters are left out.

    Parameters merge when their label and every hyperparameter are equal; with `merge_labels`,
    labels are ignored too, so the optimizer runs fewer groups (its multi-tensor kernels work per
    group). Groups come in the order their first parameter appears in the model. A group's name is
    its label (labels joined by ``+`` when merged); labels shared by groups that differ get the
    difference appended, e.g. ``layer_3[wd=0]`` and ``layer_3[wd=0.05]``, so names are unique.

    Args:
        decisions: one per parameter, in model order.
        tensors: the parameters, aligned with `decisions`.
        merge_labels: merge groups with equal hyperparameters across labels.
    """
    groups: dict[tuple, dict[str, Any]] = {}
    labels: dict[tuple, dict[str, None]] = {}  # dicts as ordered sets
    sources: dict[tuple, dict[str, None]] = {}
    for decision, tensor in zip(decisions, tensors, strict=True):
        if decision.frozen:
            continue
        options = tuple(sorted(decision.options.items())) if decision.options else ()
        key = (
            None if merge_labels else decision.label,
            decision.lr,
            decision.lr_scale,
            decision.weight_decay,
            options,
        )
        group = groups.get(key)
        if group is None:
            group = groups[key] = {
                "name": "",
                "params": [],
                "param_names": [],
                "lr": decision.lr,
                "lr_scale": decision.lr_scale,
                "weight_decay": decision.weight_decay,
                **decision.options,
                "rules": [],
            }
            labels[key], sources[key] = {}, {}
        group["params"].append(tensor)
        group["param_names"].append(decision.name)
        labels[key][decision.label] = None
        for source, _, _ in decision.applied:
            sources[key][source] = None
    result = list(groups.values())
    for key, group in groups.items():
        group["name"] = "+".join(labels[key])
        group["rules"] = list(sources[key])
    _make_names_unique(result)
    return result


def _make_names_unique(groups: list[dict[str, Any]]) -> None:
    by_name: dict[str, list[dict[str, Any]]] = {}
    for group in groups:
        by_name.setdefault(group["name"], []).append(group)
    for base, same in by_name.items():
        if len(same) == 1:
            continue
        keys = [k for k in _hyper_keys(same) if len({repr(g.get(k)) for g in same}) > 1]
        if not keys:
            continue
        for group in same:
            shown = ",".join(f"{_SHORT.get(k, k)}={_fmt(group.get(k))}" for k in keys)
            group["name"] = f"{base}[{shown}]"
    # Values equal to 4 digits still need distinct names.
    for group, name in zip(groups, param_group_names(groups), strict=True):
        group["name"] = name


def _hyper_keys(groups: list[dict[str, Any]]) -> list[str]:
    keys = ["lr", "weight_decay"]
    for group in groups:
        keys += [
            k
            for k in group
            if k not in keys and k not in ("name", "params", "param_names", "rules", "lr_scale")
        ]
    return keys


def _fmt(value: Any) -> str:
    if value is None:
        return "default"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, tuple):
        return "(" + ",".join(_fmt(v) for v in value) + ")"
    return str(value)
