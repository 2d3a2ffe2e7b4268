"""The one naming of param groups: what tables, logs (``lr/<name>``), schedules and checkpoints
call each group."""

from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["param_group_names"]


def param_group_names(param_groups: Sequence[Mapping[str, Any]]) -> list[str]:
    """Returns each group's name: its ``name`` key, else ``group{i}``; repeats get ``#2``, ``#3``.

    These names key ``group_schedules``, the LR curves, the per-group logs, the report and the
    name-keyed optimizer state, so every view calls a group the same.
    """
    names: list[str] = []
    seen: set[str] = set()
    for i, group in enumerate(param_groups):
        base = str(group.get("name") or f"group{i}")
        name, k = base, 2
        while name in seen:
            name, k = f"{base}#{k}", k + 1
        names.append(name)
        seen.add(name)
    return names
