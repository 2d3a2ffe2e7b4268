"""Setting kinds: the keys of a rule that say what its parameters get.

`SETTINGS` is the one table of them; a rule key that is neither a selector nor a setting may be
any per-group hyperparameter of a ``torch.optim`` optimizer (`OPTIMIZER_OPTION`). Each entry
parses the value a rule gives and applies it to `ParamSettings`, what the rules said so far about
one parameter. Adding a kind is one entry here.
"""

import functools
import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from pgtrain.errors import ConfigError
from pgtrain.utils.checks import is_real

__all__ = [
    "SETTINGS",
    "OPTIMIZER_OPTION",
    "OPTIMIZER_PARTS",
    "parse_bool",
    "ParamSettings",
    "Setting",
    "optimizer_keys",
    "plain_value",
    "setting_reference",
]


class ParamSettings:
    """What the rules said so far about one parameter, with every ``(source, key, value)``."""

    __slots__ = (
        "lr",
        "lr_mult",
        "weight_decay",
        "wd_mult",
        "label",
        "frozen",
        "options",
        "applied",
    )

    def __init__(self, label: str) -> None:
        self.lr: float | None = None
        self.weight_decay: float | None = None
        self.lr_mult = 1.0
        self.wd_mult = 1.0
        self.label = label
        self.frozen: bool | None = None
        self.options: dict[str, Any] = {}
        self.applied: list[tuple[str, str, Any]] = []

    def apply(self, source: str, key: str, value: Any) -> None:
        """Applies one setting from `source` (a rule id or a builder step)."""
        self.applied.append((source, key, value))
        SETTINGS.get(key, OPTIMIZER_OPTION).apply(self, key, value)


@dataclass(frozen=True)
class Setting:
    """One setting kind.

    Attributes:
        key: the rule key (``lr_mult``).
        doc: one paragraph for the reference list.
        parse: ``(value, where) -> normalized value``; raises ConfigError naming `where`.
        apply: ``(settings, key, value)``: records the value on a parameter's `ParamSettings`.
    """

    key: str
    doc: str
    parse: Callable[[Any, str], Any]
    apply: Callable[[ParamSettings, str, Any], None]


def _parse_number(value: Any, where: str) -> float:
    if not is_real(value, at_least=0):
        raise ConfigError(f"{where} must be a non-negative number, got {value!r}")
    return float(value)


def parse_bool(value: Any, where: str) -> bool:
    """`value` if it is a bool (YAML true / false), else a ConfigError naming `where`."""
    if not isinstance(value, bool):
        raise ConfigError(f"{where} must be true or false, got {value!r}")
    return value


def _parse_label(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{where} must be a non-empty string, got {value!r}")
    return value


def plain_value(value: Any, where: str = "") -> Any:
    """Returns `value` with sequences (YAML lists, OmegaConf ListConfig) as tuples, hashable."""
    if isinstance(value, Sequence) and not isinstance(value, str):
        return tuple(plain_value(v) for v in value)
    return value


# The algorithms a hybrid optimizer (pgtrain.solver.MuonAdamW) routes groups to.
OPTIMIZER_PARTS = ("muon", "adamw")


def _parse_part(value: Any, where: str) -> str:
    if value not in OPTIMIZER_PARTS:
        raise ConfigError(f"{where} must be one of {list(OPTIMIZER_PARTS)}, got {value!r}")
    return value


def _route(s: ParamSettings, key: str, value: str) -> None:
    # The group label follows the route unless a rule chose a label of its own.
    if s.label == s.options.get("optimizer"):
        s.label = value
    s.options["optimizer"] = value


def _multiply(s: ParamSettings, key: str, value: float) -> None:
    setattr(s, key, getattr(s, key) * value)


def _replace(s: ParamSettings, key: str, value: Any) -> None:
    setattr(s, key, value)


def _set_option(s: ParamSettings, key: str, value: Any) -> None:
    s.options[key] = value


_SETTING_LIST = (
    Setting(
        "lr_mult",
        "multiplies the LR; all that match a parameter multiply.",
        _parse_number,
        _multiply,
    ),
    Setting(
        "wd_mult", "multiplies the weight decay; all that match multiply.", _parse_number, _multiply
    ),
    Setting(
        "lr",
        "an absolute LR replacing the base LR; the last matching rule wins.",
        _parse_number,
        _replace,
    ),
    Setting(
        "weight_decay",
        "an absolute weight decay replacing the base one; the last matching rule wins.",
        _parse_number,
        _replace,
    ),
    Setting(
        "frozen",
        "``True`` leaves the parameter out of the optimizer (``requires_grad`` is not touched); "
        "``False`` puts a ``requires_grad=False`` parameter in. The last matching rule wins.",
        parse_bool,
        _replace,
    ),
    Setting(
        "group",
        "the label of the group the parameter goes to. The last matching rule wins.",
        _parse_label,
        lambda s, key, value: setattr(s, "label", value),
    ),
    Setting(
        "optimizer",
        "``muon`` or ``adamw``: the algorithm of a hybrid optimizer (``MuonAdamW``) that updates "
        "the parameter, e.g. to keep a matrix on AdamW; the ``muon`` builder routes every "
        "parameter first. The last matching rule wins.",
        _parse_part,
        _route,
    ),
)

SETTINGS: dict[str, Setting] = {s.key: s for s in _SETTING_LIST}

OPTIMIZER_OPTION = Setting(
    "<optimizer key>",
    "any per-group key of a ``torch.optim`` optimizer (``betas``, ``eps``, ``momentum``, ...). "
    "The last matching rule wins.",
    plain_value,
    _set_option,
)


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


def setting_reference() -> str:
    """The reference list of setting kinds, one ``- key: doc`` paragraph each."""
    entries = (*SETTINGS.values(), OPTIMIZER_OPTION)
    return "\n".join(f"- ``{s.key}``: {s.doc}" for s in entries)
