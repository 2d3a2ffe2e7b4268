"""Rules: which parameters (selectors) get which hyperparameters (settings).

A rule is a plain mapping, so configs round-trip through YAML::

    {"match": "roi_heads.*_predictor.*", "lr_mult": 10, "group": "heads"}
    {"module": "norm", "weight_decay": 0.0}
    {"fresh": True, "lr_mult": 10}

Selectors (a rule needs at least one; a parameter must satisfy all of them):

- ``match``: a glob or list of globs on the full dotted name, matched against the whole name with
  `fnmatch` rules: ``*`` matches any characters *including dots*, ``?`` one character, ``[ab]``
  a set. ``"backbone.*"`` is everything under ``backbone``; ``"*.bias"`` every bias.
- ``regex``: a regular expression or list of them, searched anywhere in the full name
  (`re.search`); anchor with ``^`` / ``$`` to match from the start / to the end.
- ``names``: explicit parameter names; an entry matches the parameter of that full name or any
  parameter whose name ends with ``"." + entry`` (so ``"pos_embed"`` finds
  ``backbone.net.pos_embed``). Every entry must match some parameter.
- ``module``: the type of the module that owns the parameter: an alias (``norm``, ``batchnorm``,
  ``groupnorm``, ``layernorm``, ``instancenorm``, ``rmsnorm``, ``conv``, ``linear``,
  ``embedding``), an import path (``"torch.nn.LayerNorm"``, or a function taking the module and
  returning a bool), or from Python a class or such a predicate; a list means any of them.
  ``norm`` is every torch norm layer plus any class whose name ends in ``Norm`` (optionally
  followed by ``1d``/``2d``/``3d``), e.g. torchvision's ``FrozenBatchNorm2d``.
- ``bias``: the parameter's own name is ``bias`` or ends with ``_bias`` (``q_bias``).
- ``max_ndim``: the parameter has at most this many dimensions (``1``: biases, norms, scales).
- ``no_weight_decay_hint``: the parameter is named by a ``no_weight_decay()`` method of the model
  or of a submodule (timm-style hints, prefixed with the submodule's name; a hint naming a module
  covers its parameters, and a hint naming nothing is ignored, as models declare optional ones).
- ``fresh``: the parameter was not provided by the initial checkpoint (bound at run time).
- ``requires_grad``: the parameter's ``requires_grad`` flag (``False`` selects frozen ones).

Name selectors also test a tied parameter's other names. Settings:

- ``lr_mult``, ``wd_mult``: multipliers; all that match a parameter multiply.
- ``lr``, ``weight_decay``: absolute values replacing the base value; the last matching rule wins.
- ``frozen``: ``True`` leaves the parameter out of the optimizer (``requires_grad`` is not
  touched); ``False`` puts a ``requires_grad=False`` parameter in. Last matching rule wins.
- ``group``: the label of the group the parameter goes to. Last matching rule wins.
- any per-group key of a ``torch.optim`` optimizer (``betas``, ``eps``, ``momentum``, ...).
  Last matching rule wins.

Precedence: ``lr = (last absolute lr, else the base lr) x product of every lr_mult``, the same for
``weight_decay`` with ``wd_mult``. ``id`` names the rule in reports (default ``rules[i]``);
``optional: True`` allows a rule to match nothing (otherwise an error).
"""

import fnmatch
import functools
import inspect
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from pgtrain.config import locate
from pgtrain.errors import ConfigError
from pgtrain.utils.checks import is_real, is_whole
from pgtrain.utils.suggest import did_you_mean

__all__ = ["Rule", "parse_rules", "is_norm", "SELECTOR_KEYS", "SETTING_KEYS"]

SELECTOR_KEYS = (
    "match",
    "regex",
    "names",
    "module",
    "bias",
    "max_ndim",
    "no_weight_decay_hint",
    "fresh",
    "requires_grad",
)
_NUMBER_SETTINGS = ("lr_mult", "wd_mult", "lr", "weight_decay")
SETTING_KEYS = (*_NUMBER_SETTINGS, "frozen", "group")
_META_KEYS = ("id", "optional")
_BOOL_SELECTORS = ("bias", "no_weight_decay_hint", "fresh", "requires_grad")

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


@dataclass(frozen=True)
class Rule:
    """One parsed rule: its selectors, its settings and how it shows in reports.

    Attributes:
        id: the rule's name in reports and errors (``rules[2]`` unless the rule sets ``id``).
        selectors: normalized selectors (patterns compiled, module types resolved).
        settings: the hyperparameters the rule sets.
        spec: the rule as written, for messages.
        optional: whether matching no parameter is allowed.
    """

    id: str
    selectors: dict[str, Any]
    settings: dict[str, Any]
    spec: dict[str, Any] = field(repr=False)
    optional: bool = False

    def describe(self) -> str:
        """Returns ``id (selector=value, ...)``, the rule as reports show it."""
        shown = ", ".join(f"{k}={self.spec[k]!r}" for k in SELECTOR_KEYS if k in self.spec)
        return f"{self.id} ({shown})"


def parse_rules(
    specs: Iterable[Mapping[str, Any] | Rule] | None, where: str = "rules"
) -> list[Rule]:
    """Validates and normalizes rules written as mappings (or already parsed `Rule` objects).

    Args:
        specs: the rules, in order; a generator is read once.
        where: the config key the rules come from, used in messages (``rules`` -> ``rules[2]``).

    Raises:
        ConfigError: a rule is not a mapping, has an unknown key (with did-you-mean), no selector,
            no setting, or a value of the wrong type.
    """
    if specs is None:
        return []
    if isinstance(specs, Mapping | str):
        raise ConfigError(f"{where} must be a list of rules (mappings), got {type(specs).__name__}")
    rules = []
    for i, spec in enumerate(specs):
        rules.append(spec if isinstance(spec, Rule) else _parse_rule(spec, f"{where}[{i}]"))
    return rules


def _parse_rule(spec: Any, where: str) -> Rule:
    if not isinstance(spec, Mapping):
        raise ConfigError(
            f"{where} must be a mapping such as {{'match': '*.bias', 'lr_mult': 2}}, got {spec!r}"
        )
    spec = {str(k): v for k, v in spec.items()}
    known = (*SELECTOR_KEYS, *SETTING_KEYS, *_META_KEYS, *optimizer_keys())
    for key in spec:
        if key not in known:
            raise ConfigError(
                f"{where}: unknown key '{key}'{did_you_mean(key, known)} (selectors: "
                f"{', '.join(SELECTOR_KEYS)}; settings: {', '.join(SETTING_KEYS)} or an "
                "optimizer key such as betas, eps, momentum)"
            )
    selectors = {k: _parse_selector(k, spec[k], where) for k in SELECTOR_KEYS if k in spec}
    settings = {
        k: _parse_setting(k, v, where)
        for k, v in spec.items()
        if k not in SELECTOR_KEYS and k not in _META_KEYS
    }
    if not selectors:
        raise ConfigError(
            f"{where} has no selector; add one of {', '.join(SELECTOR_KEYS)} "
            "(match='*' selects every parameter)"
        )
    if not settings:
        raise ConfigError(
            f"{where} sets nothing; add one of {', '.join(SETTING_KEYS)} or an optimizer key"
        )
    rule_id = spec.get("id", where)
    optional = spec.get("optional", False)
    if not isinstance(rule_id, str) or not isinstance(optional, bool):
        raise ConfigError(f"{where}: 'id' must be a string and 'optional' a bool")
    return Rule(rule_id, selectors, settings, spec, optional)


def _parse_selector(key: str, value: Any, where: str) -> Any:
    where = f"{where}.{key}"
    if key in _BOOL_SELECTORS:
        if not isinstance(value, bool):
            raise ConfigError(f"{where} must be true or false, got {value!r}")
        return value
    if key == "max_ndim":
        if not is_whole(value, at_least=0):
            raise ConfigError(f"{where} must be a non-negative integer, got {value!r}")
        return value
    if key == "module":
        return [_module_matcher(v, where) for v in _as_list(value, where, allow_objects=True)]
    patterns = _as_list(value, where)
    if key == "names":
        return patterns
    if key == "match":
        return [(p, re.compile(fnmatch.translate(p)).match) for p in patterns]
    try:
        return [(p, re.compile(p).search) for p in patterns]
    except re.error as e:
        raise ConfigError(f"{where}: invalid regular expression: {e}") from e


def _as_list(value: Any, where: str, allow_objects: bool = False) -> list[Any]:
    items = [value] if isinstance(value, str) or not isinstance(value, Sequence) else list(value)
    if not items:
        raise ConfigError(f"{where} is empty; give at least one entry or remove the key")
    for item in items:
        if not isinstance(item, str) and not (allow_objects and callable(item)):
            raise ConfigError(f"{where} entries must be strings, got {item!r}")
    return items


def _module_matcher(value: Any, where: str) -> tuple[str, ModulePredicate]:
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
        target = locate(value)
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


def _is_instance(module: nn.Module, types: tuple[type, ...]) -> bool:
    return isinstance(module, types)


def _parse_setting(key: str, value: Any, where: str) -> Any:
    where = f"{where}.{key}"
    if key in _NUMBER_SETTINGS:
        if not is_real(value, at_least=0):
            raise ConfigError(f"{where} must be a non-negative number, got {value!r}")
        return float(value)
    if key == "frozen":
        if not isinstance(value, bool):
            raise ConfigError(f"{where} must be true or false, got {value!r}")
        return value
    if key == "group":
        if not isinstance(value, str) or not value:
            raise ConfigError(f"{where} must be a non-empty string, got {value!r}")
        return value
    return plain_value(value)


def plain_value(value: Any) -> Any:
    """Returns `value` with sequences (YAML lists, OmegaConf ListConfig) as tuples, hashable."""
    if isinstance(value, Sequence) and not isinstance(value, str):
        return tuple(plain_value(v) for v in value)
    return value


@functools.cache
def optimizer_keys() -> tuple[str, ...]:
    """Returns every per-group hyperparameter some ``torch.optim`` optimizer takes, sorted.

    ``lr`` and ``weight_decay`` are settings of their own; ``params`` is not a hyperparameter.
    """
    keys: set[str] = set()
    for obj in vars(torch.optim).values():
        if isinstance(obj, type) and issubclass(obj, torch.optim.Optimizer):
            keys.update(inspect.signature(obj.__init__).parameters)
    keys -= {"self", "params", "lr", "weight_decay", "args", "kwargs", "defaults"}
    return tuple(sorted(keys))
