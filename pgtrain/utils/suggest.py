"""Did-you-mean suggestions shared by configs, registries and param-group rules."""

import difflib
from collections.abc import Iterable

__all__ = ["close_matches", "did_you_mean"]


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
