"""Does a config value fit a callable's type hint? The check behind `check_arguments`.

Values in configs are plain (numbers, strings, lists, mappings), so this checks what a config can
hold and lets everything else through: an int fits ``float`` (a bool fits neither), a list fits
``tuple[float, float]`` when its items do (YAML has no tuples), a hint this cannot read (a class,
a ``Callable``, a string annotation) accepts anything and leaves the call to complain.

Written here rather than taken from typeguard: typeguard refuses a list for a tuple and a bool
for nothing, both wrong for values that went through YAML and a command line.

``Annotated[T, check]`` adds a check of its own: ``check(value, where)`` raises a ConfigError
naming `where` (param-group rules are checked by `parse_rules` this way).
"""

import collections.abc as abc
import enum
import os
import types
import typing
from collections.abc import Callable
from typing import Any, Literal

__all__ = ["annotated_checks", "hint_problem"]

_SEQUENCES = (list, tuple, abc.Sequence, abc.Iterable, abc.Collection, abc.MutableSequence)
_MAPPINGS = (dict, abc.Mapping, abc.MutableMapping)
_PLAIN = (str, int, float, bool)
_SCALARS = {bool: "true or false", int: "a whole number", float: "a number", str: "a string"}


def annotated_checks(hint: Any) -> list[Callable[[Any, str], Any]]:
    """The checks an ``Annotated[T, check, ...]`` hint carries (none for other hints)."""
    if typing.get_origin(hint) is typing.Annotated:
        return [m for m in hint.__metadata__ if callable(m)]
    return []


def hint_problem(value: Any, hint: Any) -> str | None:
    """Returns None when `value` fits `hint`, else what the value must be (``a number``)."""
    if hint is Any or isinstance(hint, str | typing.TypeVar | typing.ForwardRef):
        return None
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Annotated:
        return hint_problem(value, args[0])
    if origin in (typing.Union, types.UnionType):
        problems = [hint_problem(value, a) for a in args]
        return None if None in problems else " or ".join(dict.fromkeys(problems))
    if hint is None or hint is type(None):
        return None if value is None else "null"
    if origin is Literal:
        return None if value in args else "one of " + ", ".join(repr(a) for a in args)
    if hint in _SCALARS:
        return None if _fits_scalar(value, hint) else _SCALARS[hint]
    if origin in _SEQUENCES or hint in _SEQUENCES:
        return _sequence_problem(value, origin or hint, args)
    if origin in _MAPPINGS or hint in _MAPPINGS:
        if not isinstance(value, abc.Mapping):
            return "a mapping"
        inner = args[1] if len(args) == 2 else Any
        bad = [hint_problem(v, inner) for v in value.values()]
        return next((f"a mapping of {p}" for p in bad if p), None)
    if isinstance(hint, type) and isinstance(value, _PLAIN) and not isinstance(value, hint):
        if not (isinstance(value, str) and issubclass(hint, os.PathLike | enum.Enum)):
            return f"a {hint.__name__}"  # 'fast' for a Tensor; not a path's or an enum's name
    return None  # a Callable, a generic class, ...: not something a value is checked against


def _fits_scalar(value: Any, hint: type) -> bool:
    if isinstance(value, bool):
        return hint is bool
    if hint is float:
        return isinstance(value, int | float)
    return isinstance(value, hint)


def _sequence_problem(value: Any, origin: Any, args: tuple) -> str | None:
    if isinstance(value, str | bytes) or not isinstance(value, list | tuple):
        return "a list"
    if origin is tuple and args and args[-1] is not Ellipsis:
        if len(value) != len(args):
            return f"a list of {len(args)} values"
        items = list(zip(value, args, strict=True))
    else:
        inner = args[0] if args else Any
        items = [(v, inner) for v in value]
    for item, inner in items:
        problem = hint_problem(item, inner)
        if problem:
            plural = f"{problem[2:]}s" if problem.startswith("a ") else problem
            return f"a list of {plural}"
    return None
