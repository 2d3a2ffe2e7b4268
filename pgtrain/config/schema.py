"""Typed settings: each component declares its settings as a dataclass; one function checks them.

A component declares the settings it reads where it is written, the way Hydra users type their
configs with structured configs::

    @dataclass
    class EMASettings:
        enabled: bool = setting(False, "keep an exponential moving average of the weights")
        decay: float = setting(0.9998, "the average's decay per update", ge=0, lt=1)
        evaluate: Literal["model", "ema", "both"] = setting("both", "what evaluations report")

omegaconf checks and converts each value by its type (``"no"`` is False, ``"1e-3"`` a float,
``2.0`` is refused where a whole number is meant, a `Literal` lists the values allowed);
`setting` adds what a type cannot say: a range, a check of its own, and what null means. Nested
dataclasses are sections (``train.ema``). `validate_settings` turns every mistake into one line
that names the key, the value and what it may be::

    train.clip_grad_norm: 0 must be > 0, or null to turn clipping off

and `settings_reference` lists every key with its type, default and meaning (docs/settings.md).
"""

import dataclasses
import operator
import types
import typing
from collections.abc import Callable, Mapping
from typing import Any, Literal

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from pgtrain.errors import ConfigError
from pgtrain.utils.suggest import did_you_mean

__all__ = [
    "SettingRow",
    "describe_type",
    "section",
    "setting",
    "settings_defaults",
    "settings_reference",
    "validate_settings",
]

_BOUNDS = {"gt": ">", "ge": ">=", "lt": "<", "le": "<="}
_BOUND_TESTS = {"gt": operator.gt, "ge": operator.ge, "lt": operator.lt, "le": operator.le}


def setting(
    default: Any,
    doc: str,
    *,
    gt: float | None = None,
    ge: float | None = None,
    lt: float | None = None,
    le: float | None = None,
    null: str | None = None,
    check: Callable[[Any], str | None] | None = None,
    expects: str | None = None,
) -> Any:
    """Declares one setting of a settings dataclass.

    Args:
        default: its default (a list is copied for each instance).
        doc: one line: what it means.
        gt: the value must be greater than this (likewise `ge`, `lt`, `le`).
        ge: the value must be at least this.
        lt: the value must be less than this.
        le: the value must be at most this.
        null: what null means, for an Optional setting (``"turn clipping off"``).
        check: ``value -> None``, or what the value must be (a check a type cannot express).
        expects: how to say what the value may be, where the type says it badly (a Union).
    """
    bounds = {k: v for k, v in (("gt", gt), ("ge", ge), ("lt", lt), ("le", le)) if v is not None}
    metadata = {"doc": doc, "bounds": bounds, "null": null, "check": check, "expects": expects}
    if isinstance(default, list | dict):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def section(schema: type, doc: str) -> Any:
    """Declares a nested section (``train.ema``) whose settings `schema` declares."""
    return dataclasses.field(default_factory=schema, metadata={"doc": doc, "section": True})


def _is_section(f: dataclasses.Field) -> bool:
    return bool(f.metadata.get("section"))


def _fields(schema: type) -> dict[str, dataclasses.Field]:
    hints = typing.get_type_hints(schema)
    found = {}
    for f in dataclasses.fields(schema):
        f.type = hints[f.name]
        found[f.name] = f
    return found


def validate_settings(schema: type, values: Mapping[str, Any] | None, where: str) -> dict:
    """Checks `values` against `schema`; returns them converted, with every default filled in.

    Args:
        schema: a dataclass whose fields are `setting` and `section` declarations.
        values: the settings as written (plain values; interpolations already resolved).
        where: the config key of the section, for messages (``train``).

    Raises:
        ConfigError: one line naming the key, the value and what it may be: an unknown key (with
            close names), a value of the wrong type, outside its range or its allowed values.
    """
    values = dict(values or {})
    fields = _fields(schema)
    for key in values:
        if key not in fields:
            raise ConfigError(
                f"{where}.{key}: unknown setting{did_you_mean(str(key), fields)} ({where} has: "
                f"{', '.join(fields)}; see docs/settings.md; a project's own values belong in a "
                "section of their own, e.g. +myproject.key=...)"
            )
    out: dict[str, Any] = {}
    typed = OmegaConf.structured(schema)
    for name, f in fields.items():
        key = f"{where}.{name}"
        if _is_section(f):
            given = values.get(name)
            if given is not None and not isinstance(given, Mapping):
                raise ConfigError(f"{key}: {given!r} must be a mapping of settings ({key}.*)")
            out[name] = validate_settings(f.type, given, key)
        elif name in values:
            out[name] = _checked(typed, f, values[name], key)
        else:
            out[name] = _default(f)
    return out


def _checked(typed: Any, f: dataclasses.Field, value: Any, key: str) -> Any:
    """One value, converted by its type (omegaconf), then checked against its declaration."""
    if _strip_optional(f.type) is bool and type(value) is int and value not in (0, 1):
        raise ConfigError(f"{key}: {value!r} must be {_expects(f)}")  # omegaconf takes 2 as True
    try:
        OmegaConf.update(typed, f.name, value)  # converts "no", 1, "1e-3" as the type says
        converted = typed[f.name]
    except (OmegaConfBaseException, ValueError, TypeError) as e:
        literal = _strip_optional(f.type)
        choices = [str(c) for c in typing.get_args(literal)]
        closest = typing.get_origin(literal) is Literal and isinstance(value, str)
        hint = _closest(value, choices) if closest else ""
        raise ConfigError(f"{key}: {value!r} must be {_expects(f)}{hint}") from e
    if not isinstance(converted, str | int | float | bool | type(None)):
        converted = OmegaConf.to_container(converted)
    if converted is None:
        return None
    for bound, limit in f.metadata.get("bounds", {}).items():
        if not _BOUND_TESTS[bound](converted, limit):
            raise ConfigError(f"{key}: {value!r} must be {_expects(f)}")
    check = f.metadata.get("check")
    problem = check(converted) if check else None
    if problem:
        raise ConfigError(f"{key}: {value!r} must be {problem}")
    return converted


def _closest(value: str, choices: list[str]) -> str:
    same = [c for c in choices if c.lower() == value.lower()]
    return f"; did you mean '{same[0]}'?" if same else did_you_mean(value, choices)


def _default(f: dataclasses.Field) -> Any:
    if _is_section(f):
        return validate_settings(f.type, {}, "")
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return f.default


def _strip_optional(tp: Any) -> Any:
    args = typing.get_args(tp)
    if typing.get_origin(tp) in (typing.Union, types.UnionType) and type(None) in args:
        rest = tuple(a for a in args if a is not type(None))
        return rest[0] if len(rest) == 1 else typing.Union[rest]  # noqa: UP007
    return tp


def _optional(tp: Any) -> bool:
    return typing.get_origin(tp) in (typing.Union, types.UnionType) and type(None) in (
        typing.get_args(tp)
    )


def describe_type(tp: Any) -> str:
    """Says in words what a value of type `tp` is: ``a whole number``, ``one of 'a', 'b'``."""
    tp = _strip_optional(tp)
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin in (list, typing.List):  # noqa: UP006
        return f"a list of {_plural(args[0]) if args else 'values'}"
    if origin in (typing.Union, types.UnionType):
        return " or ".join(describe_type(a) for a in args)
    return {
        bool: "true or false",
        int: "a whole number",
        float: "a number",
        str: "a string",
    }.get(tp, getattr(tp, "__name__", str(tp)))


def _plural(tp: Any) -> str:
    return {str: "strings", int: "whole numbers", float: "numbers"}.get(tp, describe_type(tp))


def _expects(f: dataclasses.Field) -> str:
    """What a setting's value may be, for messages: type, range, and what null means."""
    text = f.metadata.get("expects") or describe_type(f.type)
    bounds = f.metadata.get("bounds", {})
    if bounds and not f.metadata.get("expects"):
        limits = " and ".join(f"{_BOUNDS[b]} {limit:g}" for b, limit in bounds.items())
        text = f"{text} {limits}"
    if _optional(f.type):
        null = f.metadata.get("null")
        text += f", or null to {null}" if null else ", or null"
    return text


def settings_defaults(schema: type) -> dict:
    """Every setting of `schema` at its default, as plain values (a config section)."""
    return validate_settings(schema, {}, "")


@dataclasses.dataclass(frozen=True)
class SettingRow:
    """One line of the settings reference."""

    key: str
    type: str
    default: Any
    allowed: str
    doc: str
    field: dataclasses.Field = dataclasses.field(repr=False, compare=False)


def settings_reference(schema: type, where: str) -> list[SettingRow]:
    """Every setting of `schema` (sections flattened, ``train.ema.decay``) for the reference."""
    rows = []
    for name, f in _fields(schema).items():
        key = f"{where}.{name}"
        if _is_section(f):
            rows += settings_reference(f.type, key)
            continue
        allowed = _expects(f)
        row = SettingRow(key, _type_name(f.type), _default(f), allowed, f.metadata["doc"], f)
        rows.append(row)
    return rows


def _type_name(tp: Any) -> str:
    optional = _optional(tp)
    tp = _strip_optional(tp)
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is Literal:
        name = "str"
    elif origin in (list, typing.List):  # noqa: UP006
        name = f"list[{_type_name(args[0])}]"
    elif origin in (typing.Union, types.UnionType):
        name = " | ".join(_type_name(a) for a in args)
    else:
        name = getattr(tp, "__name__", str(tp))
    return f"{name} | None" if optional else name
