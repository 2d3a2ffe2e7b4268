"""Param-group builders: the registry, `build_param_groups`, and the rule-based builders.

A builder is a plain function ``(model, *, lr, weight_decay, fresh=None, **own options) ->
list[dict]`` registered in `PARAM_GROUP_BUILDERS`. Configs select one by name::

    optimizer = L(torch.optim.SGD)(
        params=L(build_param_groups)(builder="rules", lr="${..lr}",
                                     weight_decay="${..weight_decay}", rules=[...]),
        lr=0.01, momentum=0.9, weight_decay=1e-4)

A project adds its own with ``@PARAM_GROUP_BUILDERS.register("name")``; building on
`plan_param_groups` gives it rules, the audit and the report for free.
"""

import contextlib
import gc
import inspect
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from typing import Annotated, Any

from torch import nn

from pgtrain.config.lazy_call import accepts_keyword, check_arguments
from pgtrain.errors import ConfigError
from pgtrain.param_groups.audit import audit_param_groups
from pgtrain.param_groups.decide import (
    StartFn,
    decide,
    normalize_fresh,
    select,
)
from pgtrain.param_groups.merge import merge_param_groups
from pgtrain.param_groups.model_params import ModelParams, collect_model_params
from pgtrain.param_groups.record import BuildRecord, ParamGroups
from pgtrain.param_groups.rules import Rule, parse_rules
from pgtrain.param_groups.selectors import SELECTORS, closest_names, fresh_indices
from pgtrain.registry import Registry
from pgtrain.utils.checks import is_real

__all__ = [
    "PARAM_GROUP_BUILDERS",
    "paused_gc",
    "build_param_groups",
    "plan_param_groups",
    "rule_param_groups",
    "default_param_groups",
    "head_multiplier_param_groups",
]

PARAM_GROUP_BUILDERS = Registry(
    "PARAM_GROUP_BUILDERS",
    hint="built-in builders register on `import pgtrain.param_groups`; a "
    "project's on importing its module from its config file",
)

# Rules as a config writes them; `check_calls` checks them with `parse_rules` before any model.
RuleSpecs = Annotated[Iterable[Mapping[str, Any] | Rule], parse_rules]


def weight_decay_exemptions() -> list[dict[str, Any]]:
    """The rule specs that exempt biases, 1-D parameters and the model's ``no_weight_decay()``
    hints from weight decay, as the layer-wise builders apply them before their rules."""
    return [
        {"id": "no_wd_1d", "max_ndim": 1, "weight_decay": 0.0, "optional": True},
        {"id": "no_wd_bias", "bias": True, "weight_decay": 0.0, "optional": True},
        {
            "id": "no_weight_decay()",
            "no_weight_decay_hint": True,
            "weight_decay": 0.0,
            "optional": True,
        },
    ]


@contextlib.contextmanager
def paused_gc() -> Iterator[None]:
    """Pauses the cyclic garbage collector while a build allocates its per-parameter objects.

    A build creates a few small objects per parameter and no reference cycles; with the
    collector on, the allocations trigger full collections that walk the whole model and double
    the build time of a 10,000-tensor model.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def build_param_groups(
    model: nn.Module,
    *,
    builder: str = "rules",
    fresh: Collection[str] | None = None,
    **options: Any,
) -> ParamGroups:
    """Builds param groups with the builder registered as `builder`, then audits them.

    Args:
        model: the model (bound at run time: ``cfg.optimizer.params.model = model``).
        builder: a name in `PARAM_GROUP_BUILDERS` (``rules``, ``default``, ``head_multiplier``,
            ``layer_decay`` or a project's).
        fresh: names of parameters the initial checkpoint did not provide (bound at run time);
            passed on to builders that take it.
        **options: the builder's options; every builder takes ``lr`` and ``weight_decay``.

    Raises:
        RegistryError: no builder of that name (with close names and the known ones).
        ConfigError: an unknown or missing option (with did-you-mean), or anything the rules or
            the audit reject.
    """
    fn = PARAM_GROUP_BUILDERS.get(builder)
    kwargs = dict(options)
    if fresh is not None and accepts_keyword(fn, "fresh"):
        kwargs["fresh"] = fresh
    first = next(iter(inspect.signature(fn).parameters))  # the model, whatever its name
    check_arguments(fn, {first: model, **kwargs}, "optimizer.params", owner=f"builder '{builder}'")
    with paused_gc():
        groups = fn(model, **kwargs)
        if isinstance(groups, ParamGroups):  # made by plan_param_groups / audit_param_groups
            return groups
        return audit_param_groups(model, groups, builder=builder)


def _builder_of(options: dict[str, Any]) -> tuple[Callable[..., Any], dict[str, Any], str]:
    """What checks `build_param_groups`' options before a model exists: the builder they go to."""
    builder = options.get("builder", "rules")
    rest = {k: v for k, v in options.items() if k != "builder"}
    return PARAM_GROUP_BUILDERS.get(builder), rest, f"builder '{builder}'"


build_param_groups.dispatch = _builder_of  # type: ignore[attr-defined]


def plan_param_groups(
    model: nn.Module,
    rules: Sequence[Rule],
    *,
    builder: str,
    lr: float,
    weight_decay: float,
    fresh: Collection[str] | None = None,
    label: str = "default",
    start: StartFn | None = None,
    sources: Mapping[str, str] | None = None,
    notes: Sequence[str] = (),
    merge_labels: bool = False,
    params: ModelParams | None = None,
    first_match: Sequence[Rule] = (),
) -> ParamGroups:
    """Decides every parameter from `start` and `rules`, merges them into groups and audits them.

    The common core of the built-in builders, for project builders too.

    Args:
        model: the model.
        rules: parsed rules (see `parse_rules`), applied in order.
        builder: the builder's name, for reports.
        lr: the base learning rate.
        weight_decay: the base weight decay.
        fresh: names of parameters the initial checkpoint did not provide (None: not known).
        label: the group label of parameters no rule labels.
        start: a per-parameter builder step applied before the rules (see `decide`).
        sources: how builder steps named in `start` show in reports, keyed by their id.
        notes: lines for the report.
        merge_labels: merge groups with equal hyperparameters across labels.
        params: the model's parameter inventory, if the builder already collected it.
        first_match: parsed rules applied before `rules`, each parameter taking only the first
            of them that selects it ("first match wins", an if / elif chain).
    """
    _check_number("lr", lr)
    _check_number("weight_decay", weight_decay)
    with paused_gc():
        params = params or collect_model_params(model)
        fresh = normalize_fresh(fresh)
        decisions = decide(
            params,
            rules,
            lr=lr,
            weight_decay=weight_decay,
            fresh=fresh,
            label=label,
            start=start,
            first_match=first_match,
        )
        every = [*first_match, *rules]
        record = BuildRecord(
            builder,
            float(lr),
            float(weight_decay),
            {d.name: d for d in decisions},
            sources={**(sources or {}), **{r.id: r.describe() for r in every}},
            notes=[*notes, *_rule_notes(every, params, fresh)],
        )
        groups = merge_param_groups(decisions, params.tensors, merge_labels=merge_labels)
        return audit_param_groups(
            model, ParamGroups(groups, record), builder=builder, params=params
        )


def _check_number(key: str, value: Any) -> None:
    if not is_real(value, at_least=0):
        raise ConfigError(f"{key} must be a non-negative number, got {value!r}")


def _check_numbers(**options: Any) -> None:
    """Checks builder options that are non-negative numbers (None allowed: "not set")."""
    for key, value in options.items():
        if value is not None:
            _check_number(key, value)


def _rule_notes(rules: Sequence[Rule], params: ModelParams, fresh: frozenset | None) -> list[str]:
    notes = []
    fresh_rules = [r for r in rules if r.selectors.get("fresh") is True]
    if fresh is None and fresh_rules:
        notes.append(
            "fresh parameters are not known (no initial checkpoint was loaded), so "
            "rules selecting fresh=True matched nothing"
        )
    elif fresh_rules:
        count = len(fresh_indices(params, fresh))
        for rule in fresh_rules:
            if select(rule, params, fresh):
                continue
            why = (
                "the initial weights provide every parameter"
                if not count
                else f"none of the {count} fresh parameters satisfies its other selectors"
            )
            notes.append(f"{rule.describe()} matched no parameter: {why}")
    if any("no_weight_decay_hint" in r.selectors for r in rules):
        unused = [h for h, hits in params.hint_matches.items() if not hits]
        if unused:
            notes.append(
                f"no_weight_decay() hints naming no parameter (ignored): {', '.join(unused)}"
            )
    return notes


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
    _check_numbers(
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
    _check_numbers(head_lr_multiplier=head_lr_multiplier, other_lr_multiplier=other_lr_multiplier)
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
