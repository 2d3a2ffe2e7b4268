"""Applying rules: select the parameters each rule matches and decide every parameter's values."""

import difflib
import re
from collections.abc import Callable, Collection, Iterable, Sequence
from typing import Any

from pgtrain.errors import ConfigError
from pgtrain.param_groups.model_params import ModelParams
from pgtrain.param_groups.plan import ParamDecision
from pgtrain.param_groups.rules import Rule
from pgtrain.utils.suggest import close_matches

__all__ = ["select", "decide", "closest_names", "fresh_indices", "normalize_fresh"]

# A builder step applied before the rules, per parameter: (source, key, value) settings.
StartFn = Callable[[int], Iterable[tuple[str, str, Any]]]


def normalize_fresh(fresh: Iterable[str] | None) -> frozenset[str] | None:
    """Reads `fresh` once (it may be a generator) into a set; None means "not known"."""
    if fresh is None:
        return None
    if isinstance(fresh, str):
        raise ConfigError(f"fresh must be a list of parameter names, got the string {fresh!r}")
    return frozenset(str(name) for name in fresh)


def closest_names(word: str, names: Sequence[str], n: int = 3) -> list[str]:
    """Returns the `n` real names closest to `word` (a name or pattern), best first."""
    stripped = re.sub(r"[\^$*?\[\]()\\|+{}]", "", word)
    found = close_matches(stripped, names, n=n)
    if len(found) < n:  # below the usual cutoff: still name the nearest ones
        extra = difflib.get_close_matches(stripped, names, n=n + len(found), cutoff=0.0)
        found += [m for m in extra if m not in found][: n - len(found)]
    return found


def select(rule: Rule, params: ModelParams, fresh: frozenset[str] | None) -> list[int]:
    """Returns the indices of the parameters that satisfy every selector of `rule`, in order.

    Raises:
        ConfigError: a pattern, name or module type of a non-optional rule matches no parameter
            (the message names the three closest real names), or the rule as a whole matches
            nothing (rules that select ``fresh`` parameters may match nothing).
    """
    chosen: set[int] | None = None
    for key in ("match", "regex", "names", "module"):
        if key in rule.selectors:
            hits = _scan(rule, key, params)
            chosen = hits if chosen is None else chosen & hits
    indices = range(len(params.names)) if chosen is None else sorted(chosen)
    sel = rule.selectors
    if "bias" in sel:
        indices = [i for i in indices if _is_bias(params.names[i]) == sel["bias"]]
    if "max_ndim" in sel:
        indices = [i for i in indices if params.tensors[i].ndim <= sel["max_ndim"]]
    if "requires_grad" in sel:
        indices = [i for i in indices if params.tensors[i].requires_grad == sel["requires_grad"]]
    if "no_weight_decay_hint" in sel:
        hinted = params.hinted_indices
        indices = [i for i in indices if (i in hinted) == sel["no_weight_decay_hint"]]
    if "fresh" in sel:
        new = fresh_indices(params, fresh)
        indices = [i for i in indices if (i in new) == sel["fresh"]]
    indices = list(indices)
    if not indices and not rule.optional and "fresh" not in sel:
        raise ConfigError(
            f"{rule.describe()} matched no parameter (none satisfies all its selectors); check "
            "the rule or set optional=True"
        )
    return indices


def _scan(rule: Rule, key: str, params: ModelParams) -> set[int]:
    """Returns every index one pattern-like selector matches, checking each entry matches."""
    hits: set[int] = set()
    entries = rule.selectors[key]
    for entry in entries:
        found = _entry_hits(key, entry, params)
        if not found and not rule.optional:
            _raise_no_match(rule, key, entry, params)
        hits |= found
    return hits


def _entry_hits(key: str, entry: Any, params: ModelParams) -> set[int]:
    names = params.names
    if key == "module":
        _, predicate = entry
        verdict: dict[int, bool] = {}  # one call per module, not per parameter
        found = set()
        for i, owner in enumerate(params.owners):
            ok = verdict.get(id(owner))
            if ok is None:
                ok = verdict[id(owner)] = bool(predicate(owner))
            if ok:
                found.add(i)
        return found
    if key == "names":
        suffix = "." + entry

        def test(n: str) -> bool:
            return n == entry or n.endswith(suffix)

    else:
        test = entry[1]
    found = {i for i, n in enumerate(names) if test(n)}
    for i, extra in params.aliases.items():  # tied parameters answer to every name
        if i not in found and any(test(n) for n in extra):
            found.add(i)
    return found


def _raise_no_match(rule: Rule, key: str, entry: Any, params: ModelParams) -> None:
    where = f"{rule.id}.{key}"
    if key == "module":
        owning = sorted({type(o).__name__ for o in params.owners})
        raise ConfigError(
            f"{where}: no module of type '{entry[0]}' owns a parameter; module types that own "
            f"parameters: {', '.join(owning)}"
        )
    pattern = entry if key == "names" else entry[0]
    near = ", ".join(f"'{n}'" for n in closest_names(pattern, params.all_names))
    raise ConfigError(
        f"{where}: '{pattern}' matches no parameter; closest names: {near} (set optional=True "
        "if the rule may match nothing)"
    )


def _is_bias(name: str) -> bool:
    local = name.rpartition(".")[2]
    return local == "bias" or local.endswith("_bias")


def fresh_indices(params: ModelParams, fresh: frozenset[str] | None) -> set[int]:
    """Returns the indices of the parameters named in `fresh` (buffers there are ignored)."""
    if not fresh:
        return set()
    # Names of buffers (e.g. running_mean) may be in `fresh`; only parameters matter here.
    return {params.index_of_name[n] for n in fresh if n in params.index_of_name}


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
    accs = [_Acc(label) for _ in params.names]
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
    return [acc.finish(params, i, lr, weight_decay) for i, acc in enumerate(accs)]


class _Acc:
    """What the rules said so far about one parameter."""

    __slots__ = ("abs_lr", "lr_mult", "abs_wd", "wd_mult", "label", "frozen", "options", "applied")

    def __init__(self, label: str) -> None:
        self.abs_lr: float | None = None
        self.abs_wd: float | None = None
        self.lr_mult = 1.0
        self.wd_mult = 1.0
        self.label = label
        self.frozen: bool | None = None
        self.options: dict[str, Any] = {}
        self.applied: list[tuple[str, str, Any]] = []

    def apply(self, source: str, key: str, value: Any) -> None:
        self.applied.append((source, key, value))
        if key == "lr_mult":
            self.lr_mult *= value
        elif key == "wd_mult":
            self.wd_mult *= value
        elif key == "lr":
            self.abs_lr = value
        elif key == "weight_decay":
            self.abs_wd = value
        elif key == "group":
            self.label = value
        elif key == "frozen":
            self.frozen = value
        else:
            self.options[key] = value

    def finish(self, params: ModelParams, i: int, lr: float, weight_decay: float) -> ParamDecision:
        tensor = params.tensors[i]
        final_lr = (lr if self.abs_lr is None else self.abs_lr) * self.lr_mult
        final_wd = (weight_decay if self.abs_wd is None else self.abs_wd) * self.wd_mult
        return ParamDecision(
            name=params.names[i],
            shape=tuple(tensor.shape),
            label=self.label,
            lr=final_lr,
            lr_scale=final_lr / lr if lr else self.lr_mult,
            weight_decay=final_wd,
            options=self.options,
            frozen=(not tensor.requires_grad) if self.frozen is None else self.frozen,
            applied=self.applied,
        )
