"""Param-group builders: the registry, `build_param_groups`, and `plan_param_groups`.

A builder is a plain function ``(model, *, lr, weight_decay, fresh=None, **own options) ->
list[dict]`` registered in `PARAM_GROUP_BUILDERS`. Configs select one by name::

    optimizer = L(torch.optim.SGD)(
        params=L(build_param_groups)(builder="rules", lr="${..lr}",
                                     weight_decay="${..weight_decay}", rules=[...]),
        lr=0.01, momentum=0.9, weight_decay=1e-4)

A project adds its own with ``@PARAM_GROUP_BUILDERS.register("name")``; building on
`plan_param_groups` gives it rules, the audit and the report for free.
"""

import gc
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from typing import Annotated, Any

from torch import nn

from pgtrain.config.lazy_call import accepts_keyword, check_arguments, signature_of
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
from pgtrain.param_groups.selectors import fresh_indices
from pgtrain.registry import Registry
from pgtrain.utils.checks import is_real

__all__ = [
    "PARAM_GROUP_BUILDERS",
    "paused_gc",
    "build_param_groups",
    "plan_param_groups",
    "weight_decay_exemptions",
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


class paused_gc:  # noqa: N801 (used as a function: ``with paused_gc():``)
    """Pauses the cyclic garbage collector while a build allocates its per-parameter objects.

    A build creates a few small objects per parameter and no reference cycles; with the
    collector on, the allocations trigger full collections that walk the whole model and double
    the build time of a 10,000-tensor model. Nested pauses leave it to the outermost.
    """

    __slots__ = ("enabled",)

    def __enter__(self) -> None:
        self.enabled = gc.isenabled()
        if self.enabled:
            gc.disable()

    def __exit__(self, *exc: object) -> None:
        if self.enabled:
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
    first = next(iter(signature_of(fn).parameters))  # the model, whatever its name
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
            decisions.by_name(),
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


def check_numbers(**options: Any) -> None:
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
