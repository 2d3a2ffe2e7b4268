"""Checks of numeric arguments shared by the solver modules; errors name the argument."""

from typing import Any

from pgtrain.errors import ConfigError
from pgtrain.utils.checks import is_real, is_whole

__all__ = ["number", "positive_int"]


def number(value: Any, arg: str) -> float:
    """Returns `value` as a float, or raises ConfigError naming `arg` when it is not a number."""
    if not is_real(value):
        raise ConfigError(f"{arg} must be a number, got {value!r}")
    return float(value)


def positive_int(value: Any, arg: str) -> int:
    """Returns `value` as an int > 0, or raises ConfigError naming `arg`."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if not is_whole(value, at_least=1):
        raise ConfigError(f"{arg} must be a positive integer, got {value!r}")
    return value
