"""Param-group builders, one file each: the registry and `build_param_groups` (registry.py),
the rule-based builders (rules.py), layer-wise LR decay (layer_decay.py), Muon routing (muon.py).

A project registers its own with ``@PARAM_GROUP_BUILDERS.register("name")`` (docs/extending.md).
"""

from pgtrain.param_groups.builders.layer_decay import layer_decay_param_groups, layer_scales
from pgtrain.param_groups.builders.muon import muon_param_groups, muon_routes
from pgtrain.param_groups.builders.registry import (
    PARAM_GROUP_BUILDERS,
    build_param_groups,
    paused_gc,
    plan_param_groups,
    weight_decay_exemptions,
)
from pgtrain.param_groups.builders.rules import (
    default_param_groups,
    head_multiplier_param_groups,
    rule_param_groups,
)

__all__ = [
    "PARAM_GROUP_BUILDERS",
    "build_param_groups",
    "default_param_groups",
    "head_multiplier_param_groups",
    "layer_decay_param_groups",
    "layer_scales",
    "muon_param_groups",
    "muon_routes",
    "paused_gc",
    "plan_param_groups",
    "rule_param_groups",
    "weight_decay_exemptions",
]
