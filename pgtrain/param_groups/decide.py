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
StartFn = Callable[[int], Iterable[tuple[str, str, Any]]] | Sequence[Iterable[tuple[str, str, Any]]]


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

    Parameters that get the same builder step and the same rules are settled once: each rule
    marks the parameters it selects with its bit, and the settings are applied once per distinct
    (step, bits) pair. A step counts as the same only when `start` returns the very same tuple
    object (``layer_decay`` returns one per layer), so equal-looking values of other types
    (``1`` and ``1.0``) never share; any other step is settled for its parameter alone.

    Args:
        params: the model's parameters.
        rules: parsed rules, applied in order after `start`.
        lr: the base learning rate.
        weight_decay: the base weight decay.
        fresh: names of parameters the initial checkpoint did not provide (None: not known).
        label: the group label of a parameter no rule labels.
        start: a builder step applied to each parameter before the rules (e.g. layer decay):
            a function of the parameter's index, or the steps of every parameter in order.
        first_match: rules applied after `start` and before `rules` where the first rule that
            selects a parameter is the only one of them that applies to it (if / elif).
    """
    fresh_set = normalize_fresh(fresh) if not isinstance(fresh, frozenset) else fresh
    count = len(params.names)
    # Read once per parameter, before the rules; the list keeps every step alive, so no two
    # steps share an id (the settling key below).
    if start is None:
        steps_of: list[tuple] = [()] * count
    else:
        given = start if isinstance(start, Sequence) else map(start, range(count))
        steps_of = [s if type(s) is tuple else tuple(s) for s in given]
        if len(steps_of) != count:
            raise ValueError(f"start gives {len(steps_of)} steps for {count} parameters")
    every = [*first_match, *rules]  # bit k of a parameter's mask: every[k] applies to it
    masks = [0] * count
    claimed: set[int] = set()
    for k, rule in enumerate(first_match):
        bit = 1 << k
        for i in select(rule, params, fresh_set):
            if i not in claimed:
                claimed.add(i)
                masks[i] |= bit
    for k, rule in enumerate(rules, start=len(first_match)):
        bit = 1 << k
        for i in select(rule, params, fresh_set):
            masks[i] |= bit
    settled: dict[tuple[int, int], _Settled] = {}
    decisions = []
    for name, tensor, steps, mask in zip(
        params.names, params.tensors, steps_of, masks, strict=True
    ):
        key = (id(steps), mask)
        found = settled.get(key)
        if found is None:
            found = settled[key] = _Settled(_settle(label, steps, every, mask), lr, weight_decay)
        said = found.said
        decisions.append(
            ParamDecision(  # its own record: options and applied are copies
                name,
                tuple(tensor.shape),
                said.label,
                found.lr,
                found.lr_scale,
                found.weight_decay,
                said.options.copy(),
                (not tensor.requires_grad) if said.frozen is None else said.frozen,
                said.applied.copy(),
            )
        )
    return decisions


class _Settled:
    """What the same steps and rules said, with the values it gives, for all their parameters."""

    __slots__ = ("said", "lr", "lr_scale", "weight_decay")

    def __init__(self, said: ParamSettings, lr: float, weight_decay: float) -> None:
        self.said = said
        self.lr = (lr if said.lr is None else said.lr) * said.lr_mult
        self.lr_scale = self.lr / lr if lr else said.lr_mult
        self.weight_decay = (
            weight_decay if said.weight_decay is None else said.weight_decay
        ) * said.wd_mult


def _settle(
    label: str, steps: Iterable[tuple[str, str, Any]], every: Sequence[Rule], mask: int
) -> ParamSettings:
    """Applies `steps`, then each rule of `every` whose bit is set in `mask`, in order."""
    said = ParamSettings(label)
    for source, key, value in steps:
        said.apply(source, key, value)
    for k, rule in enumerate(every):
        if mask >> k & 1:
            for key, value in rule.settings.items():
                said.apply(rule.id, key, value)
    return said
