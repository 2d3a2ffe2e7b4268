"""Selector kinds: the keys of a rule that say which parameters it applies to.

`SELECTORS` is the one table of them. Each entry parses the value a rule gives (``where`` names
the config key in messages) and picks the indices of the parameters it selects; a rule applies
to the parameters every one of its selectors picks. Adding a kind is one entry here: rules
accept the key, reports show it and the reference in `pgtrain.param_groups.rules` lists it.
A project adds a kind of its own with `register_selector`.
"""

import difflib
import fnmatch
import functools
import re
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass
from itertools import compress, count, repeat
from operator import attrgetter
from typing import Any

from torch import nn

from pgtrain.config import locate
from pgtrain.errors import ConfigError
from pgtrain.param_groups.model_params import ModelParams
from pgtrain.param_groups.settings import SETTINGS, optimizer_keys, parse_bool
from pgtrain.utils.checks import is_whole
from pgtrain.utils.suggest import close_matches, did_you_mean

__all__ = [
    "SELECTORS",
    "Selector",
    "SelectContext",
    "closest_names",
    "fresh_indices",
    "is_norm",
    "register_selector",
    "selector_reference",
]


@dataclass(frozen=True)
class SelectContext:
    """What a selector may need besides its value and the parameters.

    Attributes:
        where: the rule's name in messages (``rules[2]`` or its ``id``).
        optional: the rule may match nothing, so an entry matching nothing is no error.
        fresh: names of parameters the initial checkpoint did not provide (None: not known).
    """

    where: str
    optional: bool = False
    fresh: frozenset[str] | None = None


@dataclass(frozen=True)
class Selector:
    """One selector kind.

    Attributes:
        key: the rule key (``match``).
        doc: one paragraph for the reference list.
        parse: ``(value, where) -> normalized value``; raises ConfigError naming `where`.
        pick: ``(normalized value, params, context) -> indices`` of the parameters selected.
        may_match_nothing: a rule using it may select no parameter without being optional
            (``fresh``: a run without an initial checkpoint has no fresh parameters).
    """

    key: str
    doc: str
    parse: Callable[[Any, str], Any]
    pick: Callable[[Any, ModelParams, SelectContext], Iterable[int]]
    may_match_nothing: bool = False


# Entry selectors: a value is one entry or a list of them, and each entry must match a
# parameter unless the rule is optional.


def _entries(value: Any, where: str, allow_objects: bool = False) -> list[Any]:
    items = [value] if isinstance(value, str) or not isinstance(value, Sequence) else list(value)
    if not items:
        raise ConfigError(f"{where} is empty; give at least one entry or remove the key")
    for item in items:
        if not isinstance(item, str) and not (allow_objects and callable(item)):
            raise ConfigError(f"{where} entries must be strings, got {item!r}")
    return items


def closest_names(word: str, names: Sequence[str], n: int = 3) -> list[str]:
    """Returns the `n` real names closest to `word` (a name or pattern), best first."""
    stripped = re.sub(r"[\^$*?\[\]()\\|+{}]", "", word)
    found = close_matches(stripped, names, n=n)
    if len(found) < n:  # below the usual cutoff: still name the nearest ones
        extra = difflib.get_close_matches(stripped, names, n=n + len(found), cutoff=0.0)
        found += [m for m in extra if m not in found][: n - len(found)]
    return found


# A name entry compiles to a test of many names at once: ``names -> the positions that match``,
# found by a C method mapped over the names (a model has thousands; a Python call per name costs
# more than the rest of the rule).
NamesTest = Callable[[Sequence[str]], set[int]]


def _positions(flags: Iterable[Any]) -> set[int]:
    return set(compress(count(), flags))


def _names_matching(test: NamesTest, params: ModelParams) -> set[int]:
    found = test(params.names)
    for i, extra in params.aliases.items():  # tied parameters answer to every name
        if i not in found and test(extra):
            found.add(i)
    return found


def _pick_names(
    entries: list[tuple[str, NamesTest]],
    params: ModelParams,
    ctx: SelectContext,
    key: str,
) -> set[int]:
    hits: set[int] = set()
    for shown, test in entries:
        found = _names_matching(test, params)
        if not found and not ctx.optional:
            near = ", ".join(f"'{n}'" for n in closest_names(shown, params.all_names))
            raise ConfigError(
                f"{ctx.where}.{key}: '{shown}' matches no parameter; closest names: {near} (set "
                "optional=True if the rule may match nothing)"
            )
        hits |= found
    return hits


def _name_selector(key: str, doc: str, compile_entry: Callable[[str, str], NamesTest]) -> Selector:
    def parse(value: Any, where: str) -> list[tuple[str, NamesTest]]:
        return [(p, compile_entry(p, where)) for p in _entries(value, where)]

    return Selector(key, doc, parse, functools.partial(_pick_names, key=key))


def _glob(pattern: str, where: str) -> NamesTest:
    match = re.compile(fnmatch.translate(pattern)).match
    return lambda names: _positions(map(match, names))


def _regex(pattern: str, where: str) -> NamesTest:
    try:
        search = re.compile(pattern).search
    except re.error as e:
        raise ConfigError(f"{where}: invalid regular expression: {e}") from e
    return lambda names: _positions(map(search, names))


def _name_or_suffix(entry: str, where: str) -> NamesTest:
    return functools.partial(_named_or_ending, entry, ("." + entry,))


def _named_or_ending(name: str, endings: tuple[str, ...], names: Sequence[str]) -> set[int]:
    """The positions of `name` itself and of the names that end with one of `endings`."""
    found = _positions(map(str.endswith, names, repeat(endings)))
    if name in names:  # names are distinct: one position at most
        found.add(names.index(name))
    return found


# The module selector.

_NORM_TYPES: tuple[type[nn.Module], ...] = (
    nn.BatchNorm1d,
    nn.BatchNorm2d,
    nn.BatchNorm3d,
    nn.SyncBatchNorm,
    nn.InstanceNorm1d,
    nn.InstanceNorm2d,
    nn.InstanceNorm3d,
    nn.GroupNorm,
    nn.LayerNorm,
    nn.RMSNorm,
    nn.LocalResponseNorm,
)
_NORM_NAME = re.compile(r"Norm(?:[123][dD])?$")

ModulePredicate = Callable[[nn.Module], bool]


def is_norm(module: nn.Module) -> bool:
    """Says whether `module` is a norm layer: a torch norm type or a class named ``*Norm[123d]``."""
    return isinstance(module, _NORM_TYPES) or bool(_NORM_NAME.search(type(module).__name__))


_MODULE_ALIASES: dict[str, tuple[type[nn.Module], ...] | ModulePredicate] = {
    "norm": is_norm,
    "batchnorm": (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm),
    "groupnorm": (nn.GroupNorm,),
    "layernorm": (nn.LayerNorm,),
    "instancenorm": (nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d),
    "rmsnorm": (nn.RMSNorm,),
    "conv": (
        nn.Conv1d,
        nn.Conv2d,
        nn.Conv3d,
        nn.ConvTranspose1d,
        nn.ConvTranspose2d,
        nn.ConvTranspose3d,
    ),
    "linear": (nn.Linear, nn.Bilinear),
    "embedding": (nn.Embedding, nn.EmbeddingBag),
}


def _is_instance(module: nn.Module, types: tuple[type, ...]) -> bool:
    return isinstance(module, types)


def _module_entry(value: Any, where: str) -> tuple[str, ModulePredicate]:
    """Returns (display name, predicate on a module) for one ``module`` selector entry."""
    if isinstance(value, str) and "." not in value:
        alias = _MODULE_ALIASES.get(value.lower())
        if alias is None:
            hint = did_you_mean(value.lower(), _MODULE_ALIASES)
            raise ConfigError(
                f"{where}: unknown module type '{value}'{hint} (aliases: "
                f"{', '.join(_MODULE_ALIASES)}; or an import path such as 'torch.nn.LayerNorm')"
            )
        target: Any = alias
    elif isinstance(value, str):
        try:
            target = locate(value)
        except ConfigError as e:
            raise ConfigError(f"{where}: {e}") from e
    else:
        target = value
    name = value if isinstance(value, str) else getattr(value, "__qualname__", repr(value))
    if isinstance(target, tuple):
        return name, functools.partial(_is_instance, types=target)
    if isinstance(target, type):
        return name, functools.partial(_is_instance, types=(target,))
    if callable(target):
        return name, target
    raise ConfigError(f"{where}: '{value}' is neither a module class nor a predicate function")


def _parse_modules(value: Any, where: str) -> list[tuple[str, ModulePredicate]]:
    return [_module_entry(v, where) for v in _entries(value, where, allow_objects=True)]


def _pick_modules(
    entries: list[tuple[str, ModulePredicate]], params: ModelParams, ctx: SelectContext
) -> set[int]:
    hits: set[int] = set()
    for shown, predicate in entries:
        verdict: dict[int, bool] = {}  # one call per module, not per parameter
        found = set()
        for i, owner in enumerate(params.owners):
            ok = verdict.get(id(owner))
            if ok is None:
                ok = verdict[id(owner)] = bool(predicate(owner))
            if ok:
                found.add(i)
        if not found and not ctx.optional:
            owning = sorted({type(o).__name__ for o in params.owners})
            raise ConfigError(
                f"{ctx.where}.module: no module of type '{shown}' owns a parameter; module types "
                f"that own parameters: {', '.join(owning)}"
            )
        hits |= found
    return hits


# Property selectors: true or false (or a number), tested on each parameter.


def _flag_selector(
    key: str,
    doc: str,
    has: Callable[[ModelParams, SelectContext], Collection[int]],
    **kw: Any,
) -> Selector:
    """A selector ``key: true/false``; ``has(...)`` gives the indices of the parameters that
    have the property (``false`` picks the others)."""

    def pick(value: bool, params: ModelParams, ctx: SelectContext) -> Collection[int]:
        having = has(params, ctx)
        return having if value else set(range(len(params.names))).difference(having)

    return Selector(key, doc, parse_bool, pick, **kw)


_BIAS_ENDINGS = (".bias", "_bias")


def _is_bias(name: str) -> bool:
    """The name's last part is ``bias`` or ends with ``_bias`` (``q_bias``)."""
    return name == "bias" or name.endswith(_BIAS_ENDINGS)


def _biases(params: ModelParams, ctx: SelectContext) -> set[int]:
    """`_is_bias` of every name, in C."""
    return _named_or_ending("bias", _BIAS_ENDINGS, params.names)


def _trainable(params: ModelParams, ctx: SelectContext) -> set[int]:
    return set(compress(count(), map(attrgetter("requires_grad"), params.tensors)))


def fresh_indices(params: ModelParams, fresh: Iterable[str] | None) -> set[int]:
    """Returns the indices of the parameters named in `fresh` (buffers there are ignored)."""
    if not fresh:
        return set()
    # Names of buffers (e.g. running_mean) may be in `fresh`; only parameters matter here.
    return {params.index_of_name[n] for n in fresh if n in params.index_of_name}


def _parse_max_ndim(value: Any, where: str) -> int:
    if not is_whole(value, at_least=0):
        raise ConfigError(f"{where} must be a non-negative integer, got {value!r}")
    return value


def _pick_max_ndim(value: int, params: ModelParams, ctx: SelectContext) -> Iterable[int]:
    return compress(count(), map(value.__ge__, map(attrgetter("ndim"), params.tensors)))


def _fresh(params: ModelParams, ctx: SelectContext) -> set[int]:
    return fresh_indices(params, ctx.fresh)


_SELECTOR_LIST = (
    _name_selector(
        "match",
        "a glob or list of globs on the full dotted name, matched against the whole name with "
        "`fnmatch` rules: ``*`` matches any characters *including dots*, ``?`` one character, "
        '``[ab]`` a set. ``"backbone.*"`` is everything under ``backbone``; ``"*.bias"`` every '
        "bias.",
        _glob,
    ),
    _name_selector(
        "regex",
        "a regular expression or list of them, searched anywhere in the full name (`re.search`);"
        " anchor with ``^`` / ``$`` to match from the start / to the end.",
        _regex,
    ),
    _name_selector(
        "names",
        "explicit parameter names; an entry matches the parameter of that full name or any "
        'parameter whose name ends with ``"." + entry`` (so ``"pos_embed"`` finds '
        "``backbone.net.pos_embed``). Every entry must match some parameter.",
        _name_or_suffix,
    ),
    Selector(
        "module",
        "the type of the module that owns the parameter: an alias ("
        + ", ".join(f"``{a}``" for a in _MODULE_ALIASES)
        + '), an import path (``"torch.nn.LayerNorm"``, or a function taking the module and '
        "returning a bool), or from Python a class or such a predicate; a list means any of "
        "them. ``norm`` is every torch norm layer plus any class whose name ends in ``Norm`` "
        "(optionally followed by ``1d``/``2d``/``3d``), e.g. torchvision's ``FrozenBatchNorm2d``.",
        _parse_modules,
        _pick_modules,
    ),
    _flag_selector(
        "bias",
        "the parameter's own name is ``bias`` or ends with ``_bias`` (``q_bias``).",
        _biases,
    ),
    Selector(
        "max_ndim",
        "the parameter has at most this many dimensions (``1``: biases, norms, scales).",
        _parse_max_ndim,
        _pick_max_ndim,
    ),
    _flag_selector(
        "no_weight_decay_hint",
        "the parameter is named by a ``no_weight_decay()`` method of the model or of a "
        "submodule (timm-style hints, prefixed with the submodule's name; a hint naming a module "
        "covers its parameters, and a hint naming nothing is ignored, as models declare optional "
        "ones).",
        lambda params, ctx: params.hinted_indices,
    ),
    _flag_selector(
        "fresh",
        "the parameter was not provided by the initial checkpoint (bound at run time); a rule "
        "selecting fresh parameters may match nothing.",
        _fresh,
        may_match_nothing=True,
    ),
    _flag_selector(
        "requires_grad",
        "the parameter's ``requires_grad`` flag (``False`` selects frozen ones).",
        _trainable,
    ),
)

SELECTORS: dict[str, Selector] = {s.key: s for s in _SELECTOR_LIST}


def selector_reference() -> str:
    """The reference list of selector kinds, one ``- key: doc`` paragraph each."""
    return "\n".join(f"- ``{s.key}``: {s.doc}" for s in SELECTORS.values())


# Keys a rule reads besides selectors and settings (`pgtrain.param_groups.rules`): its name in
# reports and whether it may match nothing.
_RULE_META_KEYS = ("id", "optional")


def register_selector(selector: Selector) -> Selector:
    """Adds a selector kind: rules accept ``selector.key`` from then on, and the reference lists it.

    Register from a module the config imports (as builders are registered), so the kind exists
    when the config's rules are checked and in every process of a multi-process run. Registering
    the same selector again is allowed, so a module imported twice does no harm.

    Args:
        selector: the kind; its ``parse`` checks a rule's value, its ``pick`` selects parameters.

    Returns:
        `selector`, so a module can keep it under a name.

    Raises:
        ConfigError: the key is taken by another selector kind, or it is a setting kind
            (`SETTINGS`), a rule's ``id`` / ``optional``, or an optimizer key, which a rule
            would then read two ways.
    """
    key = selector.key
    if not isinstance(key, str) or not key.isidentifier():
        raise ConfigError(f"register_selector: the key {key!r} must be a Python identifier")
    old = SELECTORS.get(key)
    if old is not None and old != selector:
        raise ConfigError(
            f"register_selector: the selector key '{key}' is taken; choose another key"
        )
    if key in SETTINGS or key in _RULE_META_KEYS or key in optimizer_keys():
        what = (
            "a setting kind"
            if key in SETTINGS
            else "a rule's own key"
            if key in _RULE_META_KEYS
            else "an optimizer key"
        )
        raise ConfigError(
            f"register_selector: '{key}' is {what}, which rules already read; choose another key"
        )
    SELECTORS[key] = selector
    return selector
