"""Parameter groups: rules, builders, audit, reduce, report, and name-keyed optimizer state."""

from pgtrain.param_groups.audit import audit_param_groups, named_groups
from pgtrain.param_groups.builders import (
    PARAM_GROUP_BUILDERS,
    build_param_groups,
    default_param_groups,
    head_multiplier_param_groups,
    layer_decay_param_groups,
    layer_scales,
    muon_param_groups,
    muon_routes,
    plan_param_groups,
    rule_param_groups,
)
from pgtrain.param_groups.layer_ids import LAYER_ID_RESOLVERS, LayerIds, resolve_layer_ids
from pgtrain.param_groups.merge import merge_param_groups
from pgtrain.param_groups.model_params import ModelParams, collect_model_params
from pgtrain.param_groups.names import param_group_names
from pgtrain.param_groups.record import PRECEDENCE, BuildRecord, ParamDecision, ParamGroups
from pgtrain.param_groups.report import (
    format_param_group_details,
    format_param_group_table,
    param_groups_to_dict,
)
from pgtrain.param_groups.rules import Rule, parse_rules
from pgtrain.param_groups.selectors import SELECTORS, Selector, is_norm, register_selector
from pgtrain.param_groups.settings import SETTINGS, Setting
from pgtrain.param_groups.state import (
    STATE_FORMAT,
    OptimizerStateLoadReport,
    load_optimizer_state_by_name,
    optimizer_state_by_name,
    optimizer_state_from_torch,
)

__all__ = [
    "PARAM_GROUP_BUILDERS",
    "LAYER_ID_RESOLVERS",
    "PRECEDENCE",
    "SELECTORS",
    "SETTINGS",
    "STATE_FORMAT",
    "BuildRecord",
    "LayerIds",
    "ModelParams",
    "OptimizerStateLoadReport",
    "ParamDecision",
    "ParamGroups",
    "Rule",
    "Selector",
    "Setting",
    "audit_param_groups",
    "build_param_groups",
    "collect_model_params",
    "default_param_groups",
    "format_param_group_details",
    "format_param_group_table",
    "head_multiplier_param_groups",
    "is_norm",
    "layer_decay_param_groups",
    "muon_param_groups",
    "muon_routes",
    "layer_scales",
    "load_optimizer_state_by_name",
    "named_groups",
    "optimizer_state_by_name",
    "optimizer_state_from_torch",
    "param_group_names",
    "param_groups_to_dict",
    "parse_rules",
    "plan_param_groups",
    "register_selector",
    "merge_param_groups",
    "resolve_layer_ids",
    "rule_param_groups",
]
