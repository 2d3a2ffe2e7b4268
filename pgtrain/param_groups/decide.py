"""Applying rules: select the parameters each rule matches and decide every parameter's values."""

from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from operator import attrgetter, itemgetter
from typing import Any

import torch

from pgtrain.errors import ConfigError
from pgtrain.param_groups.model_params import ModelParams
from pgtrain.param_groups.record import ParamDecision
from pgtrain.param_groups.rules import Rule
from pgtrain.param_groups.selectors import SELECTORS, SelectContext
from pgtrain.param_groups.settings import ParamSettings

__all__ = ["select", "decide", "normalize_fresh", "Decisions", "Outcome"]

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
) -> "Decisions":
    """Decides every parameter's group label and hyperparameters from the rules, in model order.

    Parameters that get the same builder step and the same rules are settled once: each rule
    marks the parameters it selects with its bit, and the settings are applied once per distinct
    (step, bits, requires_grad): an `Outcome`, which the merge groups once for all its
    parameters. The per-parameter records are made when first read (see `Decisions`). A step
    counts as the same only when `start` returns the very same tuple object (``layer_decay``
    returns one per layer), so equal-looking values of other types (``1`` and ``1.0``) never
    share; any other step is settled for its parameter alone.

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
    # One key per parameter, the distinct keys in the order of their first parameter, each
    # settled once: the per-parameter work runs in C (zip, map, dict), the settling in Python.
    trainable = list(map(attrgetter("requires_grad"), params.tensors))
    keys = list(zip(map(id, steps_of), masks, trainable, strict=True))
    first = dict(zip(reversed(keys), range(count - 1, -1, -1), strict=True))  # key -> first index
    ordered = sorted(first.items(), key=itemgetter(1))
    outcomes = [
        Outcome(_settle(label, steps_of[i], every, masks[i]), lr, weight_decay, not trainable[i])
        for _, i in ordered
    ]
    position = {key: k for k, (key, _) in enumerate(ordered)}
    outcome_of = list(map(position.__getitem__, keys))
    return Decisions(params.names, params.tensors, outcomes, outcome_of)


class Outcome:
    """What the same steps and rules decided, for every parameter they apply to alike."""

    __slots__ = ("label", "lr", "lr_scale", "weight_decay", "options", "frozen", "applied")

    def __init__(self, said: ParamSettings, lr: float, weight_decay: float, grad_off: bool) -> None:
        self.label = said.label
        self.lr = (lr if said.lr is None else said.lr) * said.lr_mult
        self.lr_scale = self.lr / lr if lr else said.lr_mult
        self.weight_decay = (
            weight_decay if said.weight_decay is None else said.weight_decay
        ) * said.wd_mult
        self.options = said.options
        self.frozen = grad_off if said.frozen is None else said.frozen
        self.applied = said.applied


class Decisions(Sequence[ParamDecision]):
    """Every parameter's `ParamDecision`, in model order, kept as one `Outcome` per distinct
    (builder step, rules, requires_grad) and each parameter's outcome; the per-parameter records
    are made on first read (a report, `explain`, a checkpoint), each its own copy.

    Attributes:
        names: the parameters' names.
        tensors: the parameters, aligned with `names`.
        outcomes: the distinct outcomes, in the order their first parameter appears (a
            `ParamDecision` is one too: `of` makes one outcome per decision).
        outcome_of: the index into `outcomes` of each parameter.
    """

    def __init__(
        self,
        names: Sequence[str],
        tensors: Sequence[torch.Tensor],
        outcomes: Sequence[Any],
        outcome_of: Sequence[int],
    ) -> None:
        self.names, self.tensors = names, tensors
        self.outcomes, self.outcome_of = outcomes, outcome_of
        self._made: list[ParamDecision] | None = None

    @classmethod
    def of(cls, decisions: Sequence[ParamDecision], tensors: Sequence[torch.Tensor]) -> "Decisions":
        """`decisions` made elsewhere, each its own outcome."""
        if isinstance(decisions, Decisions):
            return decisions
        decisions = list(decisions)
        if len(decisions) != len(tensors):
            raise ValueError(f"{len(decisions)} decisions for {len(tensors)} tensors")
        names = [d.name for d in decisions]
        return cls(names, tensors, decisions, range(len(decisions)))

    def _records(self) -> list[ParamDecision]:
        if self._made is None:
            outcomes = self.outcomes
            self._made = [
                ParamDecision(  # its own record: options and applied are copies
                    name,
                    tuple(tensor.shape),
                    (o := outcomes[k]).label,
                    o.lr,
                    o.lr_scale,
                    o.weight_decay,
                    o.options.copy(),
                    o.frozen,
                    list(o.applied),
                )
                for name, tensor, k in zip(self.names, self.tensors, self.outcome_of, strict=True)
            ]
        return self._made

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, i):  # type: ignore[override]
        return self._records()[i]

    def __iter__(self) -> Iterator[ParamDecision]:
        return iter(self._records())

    def by_name(self) -> "Mapping[str, ParamDecision]":
        """The records keyed by parameter name, in model order (made on first read too)."""
        return _ByName(self)


class _ByName(Mapping[str, ParamDecision]):
    """`Decisions` keyed by name, as `BuildRecord.decisions` holds them."""

    def __init__(self, decisions: Decisions) -> None:
        self._decisions = decisions
        self._dict: dict[str, ParamDecision] | None = None

    def _made(self) -> dict[str, ParamDecision]:
        if self._dict is None:
            self._dict = {d.name: d for d in self._decisions}
        return self._dict

    def __getitem__(self, name: str) -> ParamDecision:
        return self._made()[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._made())

    def __len__(self) -> int:
        return len(self._decisions)

    def __contains__(self, name: object) -> bool:
        return name in self._made()

    def get(self, name, default=None):  # type: ignore[override]
        return self._made().get(name, default)

    def values(self):  # type: ignore[override]
        return self._made().values()

    def items(self):  # type: ignore[override]
        return self._made().items()


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
