"""The rule-based builders: ``rules``, ``default`` (norm and bias exempt from weight decay) and
``head_multiplier`` (the Mask R-CNN fine-tuning recipe's predictors at a multiple of the LR)."""

from collections.abc import Collection, Mapping, Sequence
from typing import Any

from torch import nn

from pgtrain.errors import ConfigError
from pgtrain.param_groups.builders.registry import (
    PARAM_GROUP_BUILDERS,
    RuleSpecs,
    check_numbers,
    plan_param_groups,
)
from pgtrain.param_groups.model_params import collect_model_params
from pgtrain.param_groups.record import ParamGroups
from pgtrain.param_groups.rules import parse_rules
from pgtrain.param_groups.selectors import SELECTORS, closest_names

__all__ = ["default_param_groups", "head_multiplier_param_groups", "rule_param_groups"]


@PARAM_GROUP_BUILDERS.register("rules")
def rule_param_groups(
    model: nn.Module,
    *,
    lr: float,
    weight_decay: float = 0.0,
    rules: RuleSpecs = (),
    fresh: Collection[str] | None = None,
    merge_labels: bool = False,
    first_match: bool = False,
) -> ParamGroups:
    """Groups parameters by an ordered list of rules (see `pgtrain.param_groups.rules`).

    Without rules every trainable parameter lands in one group, ``default``, at the base values.
    By default every rule that selects a parameter applies (multipliers multiply); with
    ``first_match=True`` only the first one does, like an if / elif chain.

    Args:
        model: the model.
        lr: the base learning rate.
        weight_decay: the base weight decay.
        rules: the rules, in order.
        fresh: names of parameters the initial checkpoint did not provide.
        merge_labels: merge groups with equal hyperparameters across labels.
        first_match: apply to each parameter only the first rule that selects it.
    """
    parsed = parse_rules(rules)
    return plan_param_groups(
        model,
        [] if first_match else parsed,
        builder="rules",
        lr=lr,
        weight_decay=weight_decay,
        fresh=fresh,
        merge_labels=merge_labels,
        first_match=parsed if first_match else (),
    )


@PARAM_GROUP_BUILDERS.register("default")
def default_param_groups(
    model: nn.Module,
    *,
    lr: float,
    weight_decay: float = 0.0,
    weight_decay_norm: float | None = 0.0,
    bias_lr_factor: float = 1.0,
    weight_decay_bias: float | None = None,
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
    rules: RuleSpecs = (),
    fresh: Collection[str] | None = None,
    merge_labels: bool = False,
) -> ParamGroups:
    """Detectron2-style groups: norm weight decay, bias LR factor and weight decay, overrides.

    Built from rules applied in this order: ``norm`` (parameters of norm layers get
    `weight_decay_norm`), ``bias`` (biases, including ``*_bias``, get ``lr x bias_lr_factor`` and
    `weight_decay_bias`, which therefore wins for norm biases), ``overrides[name]``, then `rules`.

    Args:
        model: the model.
        lr: the base learning rate.
        weight_decay: the base weight decay.
        weight_decay_norm: weight decay of norm-layer parameters; None keeps the base value.
        bias_lr_factor: LR multiplier of biases.
        weight_decay_bias: weight decay of biases; None leaves it to the other rules.
        overrides: settings per parameter name, e.g. ``{"pos_embed": {"weight_decay": 0.0}}``;
            a name matches the full name or a dotted suffix (``pos_embed`` finds
            ``backbone.net.pos_embed``) and must match something.
        rules: further rules, applied last.
        fresh: names of parameters the initial checkpoint did not provide.
        merge_labels: merge groups with equal hyperparameters across labels.
    """
    check_numbers(
        weight_decay_norm=weight_decay_norm,
        bias_lr_factor=bias_lr_factor,
        weight_decay_bias=weight_decay_bias,
    )
    specs: list[Mapping[str, Any]] = []
    if weight_decay_norm is not None:
        specs.append(
            {"id": "norm", "module": "norm", "weight_decay": weight_decay_norm, "optional": True}
        )
    bias: dict[str, Any] = {}
    if bias_lr_factor != 1.0:
        bias["lr_mult"] = bias_lr_factor
    if weight_decay_bias is not None:
        bias["weight_decay"] = weight_decay_bias
    if bias:
        specs.append({"id": "bias", "bias": True, "optional": True, **bias})
    for name, values in (overrides or {}).items():
        if not isinstance(values, Mapping) or set(values) & set(SELECTORS):
            raise ConfigError(
                f"overrides['{name}'] must map settings (lr, weight_decay, ...) to "
                f"values, got {values!r}"
            )
        specs.append({"id": f"overrides['{name}']", "names": [name], **values})
    return plan_param_groups(
        model,
        [*parse_rules(specs, "overrides"), *parse_rules(rules)],
        builder="default",
        lr=lr,
        weight_decay=weight_decay,
        fresh=fresh,
        merge_labels=merge_labels,
    )


@PARAM_GROUP_BUILDERS.register("head_multiplier")
def head_multiplier_param_groups(
    model: nn.Module,
    *,
    lr: float,
    weight_decay: float = 0.0,
    head_lr_multiplier: float = 10.0,
    other_lr_multiplier: float = 5.0,
    rules: RuleSpecs = (),
    fresh: Collection[str] | None = None,
    merge_labels: bool = False,
) -> ParamGroups:
    """The Mask R-CNN fine-tuning recipe's groups: ``backbone``, ``box_head``, ``mask_head``,
    ``other``.

    A name containing ``backbone`` is in ``backbone`` (base LR); else one containing
    ``box_predictor`` is in ``box_head`` and one containing ``mask_predictor`` in ``mask_head``
    (both at ``lr x head_lr_multiplier``); everything else (RPN, box and mask heads' convs and
    FCs) is in ``other`` at ``lr x other_lr_multiplier``. Works on torchvision's Mask R-CNN names
    (and Faster R-CNN's, which have no mask predictor).

    Args:
        model: the model.
        lr: the base learning rate (the backbone's).
        weight_decay: the weight decay of every group.
        head_lr_multiplier: LR multiplier of the box and mask predictors (the new heads).
        other_lr_multiplier: LR multiplier of the rest.
        rules: further rules, applied after the grouping.
        fresh: names of parameters the initial checkpoint did not provide.
        merge_labels: merge groups with equal hyperparameters across labels.
    """
    check_numbers(head_lr_multiplier=head_lr_multiplier, other_lr_multiplier=other_lr_multiplier)
    # The recipe's if / elif chain: the first of these that selects a parameter decides it.
    specs = [
        {"id": "backbone", "regex": "backbone", "group": "backbone"},
        {
            "id": "box_predictor",
            "regex": "box_predictor",
            "group": "box_head",
            "lr_mult": head_lr_multiplier,
        },
        {
            "id": "mask_predictor",
            "regex": "mask_predictor",
            "group": "mask_head",
            "lr_mult": head_lr_multiplier,
            "optional": True,
        },
        {
            "id": "other",
            "match": "*",
            "group": "other",
            "lr_mult": other_lr_multiplier,
            "optional": True,
        },
    ]
    params = collect_model_params(model)
    return plan_param_groups(
        model,
        parse_rules(rules),
        first_match=parse_rules(specs, "head_multiplier"),
        builder="head_multiplier",
        lr=lr,
        weight_decay=weight_decay,
        fresh=fresh,
        notes=_missing_mask_predictor(params.names, other_lr_multiplier),
        merge_labels=merge_labels,
        params=params,
    )


def _missing_mask_predictor(names: Sequence[str], other_lr_multiplier: float) -> list[str]:
    """Says so when no name has ``mask_predictor``: those parameters silently become ``other``."""
    if any("mask_predictor" in n and "backbone" not in n for n in names):
        return []
    candidates = [n for n in names if "mask" in n and "backbone" not in n]
    if not candidates:
        return ["no mask_predictor in the model (a Faster R-CNN has none): no 'mask_head' group"]
    closest = closest_names("mask_predictor", candidates)
    near = ", ".join(f"'{n}'" for n in candidates if n in closest)  # in model order
    return [
        f"no parameter name contains 'mask_predictor', so there is no 'mask_head' group and the "
        f"mask parameters ({near}) are in 'other' at {other_lr_multiplier:g}x; name the mask "
        "predictor module 'mask_predictor' (as torchvision does) to give it the head LR"
    ]
