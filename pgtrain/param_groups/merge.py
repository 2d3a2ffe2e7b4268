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
    found: dict[tuple, _Members] = {}
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
        members = found.get(key)
        if members is None:
            members = found[key] = _Members(decision)
        members.tensors.append(tensor)
        members.names.append(decision.name)
        members.labels[decision.label] = None
        applied = decision.applied
        if applied != members.last_applied:  # else its sources are in already
            members.last_applied = applied
            for source, _, _ in applied:
                members.sources[source] = None
    result = [members.group() for members in found.values()]
    _make_names_unique(result)
    return result


class _Members:
    """What one group gathers from its parameters' decisions, in model order."""

    __slots__ = ("first", "tensors", "names", "labels", "sources", "last_applied")

    def __init__(self, first: ParamDecision) -> None:
        self.first = first  # its hyperparameters are the group's
        self.tensors: list[torch.Tensor] = []
        self.names: list[str] = []
        self.labels: dict[str, None] = {}  # dicts as ordered sets
        self.sources: dict[str, None] = {}
        self.last_applied: list | None = None  # members mostly share their provenance

    def group(self) -> dict[str, Any]:
        """The torch param group, named by its labels (made unique later)."""
        first = self.first
        group = {
            "name": "",
            "params": self.tensors,
            "param_names": self.names,
            "lr": first.lr,
            "lr_scale": first.lr_scale,
            "weight_decay": first.weight_decay,
            **first.options,
            "rules": [],
        }
        group["name"] = "+".join(self.labels)  # after the options: an option cannot rename it
        group["rules"] = list(self.sources)
        return group


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


_NOT_HYPER = frozenset(("name", "params", "param_names", "rules", "lr_scale"))


def _hyper_keys(groups: list[dict[str, Any]]) -> list[str]:
    keys = dict.fromkeys(("lr", "weight_decay"))  # an ordered set
    for group in groups:
        keys.update(dict.fromkeys(k for k in group if k not in _NOT_HYPER))
    return list(keys)


def _fmt(value: Any) -> str:
    if value is None:
        return "default"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, tuple):
        return "(" + ",".join(_fmt(v) for v in value) + ")"
    return str(value)
