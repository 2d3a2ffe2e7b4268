"""Merge: parameters with identical hyperparameters (and label) become one param group."""

from collections.abc import Sequence
from typing import Any

import torch

from pgtrain.param_groups.decide import Decisions, Outcome
from pgtrain.param_groups.names import param_group_names
from pgtrain.param_groups.record import ParamDecision

__all__ = ["merge_param_groups"]

_SHORT = {"weight_decay": "wd", "lr_scale": "x"}


def merge_param_groups(
    decisions: Decisions | Sequence[ParamDecision],
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
        decisions: one per parameter, in model order (`decide`'s `Decisions`, or a list).
        tensors: the parameters, aligned with `decisions`.
        merge_labels: merge groups with equal hyperparameters across labels.
    """
    decided = Decisions.of(decisions, tensors)
    found: dict[tuple, _Members] = {}
    members_of: list[_Members | None] = []  # per outcome: the group its parameters join
    for outcome in decided.outcomes:
        if outcome.frozen:
            members_of.append(None)
            continue
        options = tuple(sorted(outcome.options.items())) if outcome.options else ()
        key = (
            None if merge_labels else outcome.label,
            outcome.lr,
            outcome.lr_scale,
            outcome.weight_decay,
            options,
        )
        members = found.get(key)
        if members is None:
            members = found[key] = _Members(outcome)
        members.labels[outcome.label] = None
        for source, _, _ in outcome.applied:
            members.sources[source] = None
        members_of.append(members)
    # Outcomes come in the order of their first parameter, so groups, labels and sources keep
    # the model's order; only the members are gathered per parameter.
    for name, tensor, k in zip(decided.names, tensors, decided.outcome_of, strict=True):
        members = members_of[k]
        if members is not None:
            members.tensors.append(tensor)
            members.names.append(name)
    result = [members.group() for members in found.values()]
    _make_names_unique(result)
    return result


class _Members:
    """What one group gathers from its parameters' outcomes, in model order."""

    __slots__ = ("first", "tensors", "names", "labels", "sources")

    def __init__(self, first: Outcome | ParamDecision) -> None:
        self.first = first  # its hyperparameters are the group's
        self.tensors: list[torch.Tensor] = []
        self.names: list[str] = []
        self.labels: dict[str, None] = {}  # dicts as ordered sets
        self.sources: dict[str, None] = {}

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
        first, rest = same[0], same[1:]
        keys = [k for k in _hyper_keys(same) if _differ(first, rest, k)]
        if not keys:
            continue
        for group in same:
            shown = ",".join(f"{_SHORT.get(k, k)}={_fmt(group.get(k))}" for k in keys)
            group["name"] = f"{base}[{shown}]"
    # Values equal to 4 digits still need distinct names.
    for group, name in zip(groups, param_group_names(groups), strict=True):
        group["name"] = name


def _differ(first: dict[str, Any], rest: list[dict[str, Any]], key: str) -> bool:
    """Whether the groups show different values of `key` (``1`` and ``1.0`` differ)."""
    value = first.get(key)
    shown = None
    for group in rest:
        other = group.get(key)
        if other is value:  # one object, one repr (mostly a rule's own value)
            continue
        if shown is None:
            shown = repr(value)
        if repr(other) != shown:
            return True
    return False


_NOT_HYPER = frozenset(("name", "params", "param_names", "rules", "lr_scale"))


def _hyper_keys(groups: list[dict[str, Any]]) -> list[str]:
    keys = dict.fromkeys(("lr", "weight_decay"))  # an ordered set
    for group in groups:
        keys.update(dict.fromkeys(group))
    return [k for k in keys if k not in _NOT_HYPER]


def _fmt(value: Any) -> str:
    if value is None:
        return "default"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, tuple):
        return "(" + ",".join(_fmt(v) for v in value) + ")"
    return str(value)
