"""The one set of number checks for user-given values (a bool is not a number here).

Each returns whether a value is acceptable, so the caller's message keeps naming its own key.
"""

from typing import Any

__all__ = ["as_real", "is_real", "is_whole"]


def is_whole(value: Any, at_least: int | None = None, at_most: int | None = None) -> bool:
    """Whether `value` is an int (not a bool) within the given bounds."""
    if isinstance(value, bool) or not isinstance(value, int):
        return False
    return (at_least is None or value >= at_least) and (at_most is None or value <= at_most)


def is_real(
    value: Any,
    at_least: float | None = None,
    at_most: float | None = None,
    *,
    above: float | None = None,
    below: float | None = None,
) -> bool:
    """Whether `value` is an int or float (not a bool) within the given bounds."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    return (
        (at_least is None or value >= at_least)
        and (at_most is None or value <= at_most)
        and (above is None or value > above)
        and (below is None or value < below)
    )


def as_real(value: Any) -> float | None:
    """`value` as a float when it is a real number (not a bool), else None (unknown)."""
    return float(value) if is_real(value) else None
