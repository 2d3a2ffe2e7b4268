"""Applying rules: select the parameters each rule matches and decide every parameter's values."""

from collections.abc import Callable, Collection, Iterable, Sequence
from typing import Any

from pgtrain.errors import ConfigError
from pgtrain.param_groups.model_params import ModelParams
from pgtrain.param_groups.record import ParamDecision
from pgtrain.param_groups.rules import Rule
from pgtrain.param_groups.selectors import SELECTORS, SelectContext
from pgtrain.param_groups.settings import ParamSettings

__all__ = ["select", "decide", "normalize_fresh"]

# A builder step applied before the rules, per parameter: (source, key, value) settings.
StartFn = Callable[[int], Iterable[tuple[str, str, Any]]]


def normalize_fresh(fresh: Iterable[str] | None) -> frozenset[str] | None:
    """Reads `fresh` once (it may be a generator) into a set; None means "not known"."""
    if fresh is None:
        return None
    if isinstance(fresh, str):
        raise ConfigError(f"fresh must be a list of parameter names, got the string {fresh!r}")
    return frozenset(str(name) for name in fresh)


def select(rule: Rule, params: ModelParams, fresh: frozenset[str] | None) -> list[int]:
    """Returns the indices of the parameters that satisfy every selector of `rule`, in order.

    Raises:
        ConfigError: a pattern, name or module type of a non-optional rule matches no parameter
            (the message names the three closest real names), or the rule as a whole matches
            nothing (rules with a selector that may match nothing, such as ``fresh``, may).
    """
    ctx = SelectContext(rule.id, rule.optional, fresh)
    chosen: set[int] | None = None
    for key, value in rule.selectors.items():
        picked = set(SELECTORS[key].pick(value, params, ctx))
        chosen = picked if chosen is None else chosen & picked
    indices = sorted(chosen or ())
    quiet = rule.optional or any(SELECTORS[k].may_match_nothing for k in rule.selectors)
    if not indices and not quiet:
        raise ConfigError(
            f"{rule.describe()} matched no parameter (none satisfies all its selectors); check "
            "the rule or set optional=True"
        )
    return indices


def decide(
    params: ModelParams,
    rules: Sequence[Rule],
    *,
    lr: float,
    weight_decay: float,
    fresh: Collection[str] | None = None,
    label: str = "default",
    start: StartFn | None = None,
    first_match: Sequence[Rule] = (),
) -> list[ParamDecision]:
    """Decides every parameter's group label and hyperparameters from the rules, in model order.

    Args:
        params: the model's parameters.
        rules: parsed rules, applied in order after `start`.
        lr: the base learning rate.
        weight_decay: the base weight decay.
        fresh: names of parameters the initial checkpoint did not provide (None: not known).
        label: the group label of a parameter no rule labels.
        start: a builder step applied to each parameter before the rules (e.g. layer decay).
        first_match: rules applied after `start` and before `rules` where the first rule that
            selects a parameter is the only one of them that applies to it (if / elif).
    """
    fresh_set = normalize_fresh(fresh) if not isinstance(fresh, frozenset) else fresh
    accs = [ParamSettings(label) for _ in params.names]
    if start is not None:
        for i, acc in enumerate(accs):
            for source, key, value in start(i):
                acc.apply(source, key, value)
    claimed: set[int] = set()
    for rule in first_match:
        chosen = [i for i in select(rule, params, fresh_set) if i not in claimed]
        claimed.update(chosen)
        for i in chosen:
            for key, value in rule.settings.items():
                accs[i].apply(rule.id, key, value)
    for rule in rules:
        items = list(rule.settings.items())
        for i in select(rule, params, fresh_set):
            acc = accs[i]
            for key, value in items:
                acc.apply(rule.id, key, value)
    return [_finish(acc, params, i, lr, weight_decay) for i, acc in enumerate(accs)]


def _finish(
    said: ParamSettings, params: ModelParams, i: int, lr: float, weight_decay: float
) -> ParamDecision:
    tensor = params.tensors[i]
    final_lr = (lr if said.lr is None else said.lr) * said.lr_mult
    final_wd = (weight_decay if said.weight_decay is None else said.weight_decay) * said.wd_mult
    return ParamDecision(
        name=params.names[i],
        shape=tuple(tensor.shape),
        label=said.label,
        lr=final_lr,
        lr_scale=final_lr / lr if lr else said.lr_mult,
        weight_decay=final_wd,
        options=said.options,
        frozen=(not tensor.requires_grad) if said.frozen is None else said.frozen,
        applied=said.applied,
    )
