"""What one-line messages share: did-you-mean suggestions and lists cut to a few entries."""

import difflib
from collections.abc import Iterable

__all__ = ["close_matches", "did_you_mean", "listing"]


def close_matches(word: str, candidates: Iterable[str], n: int = 3) -> list[str]:
    """Returns up to `n` candidates closest to `word`, best first."""
    unique = list(dict.fromkeys(candidates))  # a name listed twice is suggested once
    return difflib.get_close_matches(word, unique, n=n, cutoff=0.5)


def did_you_mean(word: str, candidates: Iterable[str]) -> str:
    """Returns "; did you mean 'x'?" (or "" when nothing is close), to append to a message."""
    matches = close_matches(word, candidates)
    if not matches:
        return ""
    return "; did you mean " + " or ".join(f"'{m}'" for m in matches) + "?"


def listing(items: Iterable[object], limit: int = 8, *, quote: bool = False) -> str:
    """``a, b, c, ... and 5 more``: the first `limit` items of a list for a one-line message
    (quoted with ``quote=True``), then how many were left out."""
    items = [f"'{i}'" if quote else str(i) for i in items]
    shown = ", ".join(items[:limit])
    return shown + (f", ... and {len(items) - limit:,} more" if len(items) > limit else "")
