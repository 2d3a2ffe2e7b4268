"""CheckpointReport: what loading a checkpoint did to the model."""

from dataclasses import dataclass, field
from typing import Any

from pgtrain.utils.suggest import listing

__all__ = ["CheckpointReport"]

# Long key lists are cut in the log; the report object itself keeps every key.
_MAX_LISTED = 8


@dataclass
class CheckpointReport:
    """Describes one load: which model keys were taken, skipped or absent.

    Attributes:
        path: The file that was loaded ("" when nothing was loaded).
        loaded: Model state keys that received values from the file.
        missing: Model state keys the file does not provide.
        unexpected: Keys in the file that the model does not have.
        shape_mismatched: ``(key, shape in file, shape in model)`` for keys that were skipped.
        excluded: Keys of the file left out on purpose (``train.init_checkpoint_exclude``).
        fresh: Model parameter names the file did not provide (missing or shape-mismatched),
            i.e. the parameters that start from their initialization. Empty when nothing was
            loaded, because there is no checkpoint to compare against. On resume it also holds
            the fresh parameters recorded when the run first loaded its initial weights.
        extra: The file's other top-level values, e.g. ``{"iteration": 4}``; empty for a bare
            state_dict.
        checkpointables: Names of the checkpointables restored from the file.
        rng_restored: Whether the random number generator states were restored.
        resumed: Whether this was a resume from the run's own last checkpoint (not initial
            weights).
        contents: Everything the file holds besides the model weights, as read (the training
            state `Checkpointer.restore_state` restores later without reading the file again).
    """

    path: str
    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    shape_mismatched: list[tuple[str, tuple, tuple]] = field(default_factory=list)
    excluded: list[str] = field(default_factory=list)
    fresh: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
    checkpointables: list[str] = field(default_factory=list)
    rng_restored: bool = False
    resumed: bool = False
    contents: dict[str, Any] = field(default_factory=dict, repr=False)

    def summary(self) -> str:
        """Returns a few lines for the log: counts, the keys that did not load, and extras."""
        if not self.path:
            return "No checkpoint loaded: the model keeps its initialization."
        lines = [f"Loaded {len(self.loaded)} model tensors from {self.path}"]
        if self.checkpointables or self.rng_restored:
            restored = self.checkpointables + (["rng"] if self.rng_restored else [])
            lines.append(f"  restored: {', '.join(restored)}")
        if self.shape_mismatched:
            shapes = [f"{k} {tuple(a)} in file vs {tuple(b)}" for k, a, b in self.shape_mismatched]
            lines.append(_listing("skipped, shape mismatch", shapes))
        if self.excluded:
            lines.append(_listing("left out (init_checkpoint_exclude)", self.excluded))
        if self.missing:
            lines.append(_listing("missing in file", self.missing))
        if self.unexpected:
            lines.append(_listing("not in model", self.unexpected))
        lines += self._fresh_lines()
        plain = {k: v for k, v in self.extra.items() if isinstance(v, int | float | str | bool)}
        if isinstance(plain.get("iteration"), int) and not isinstance(plain["iteration"], bool):
            # `iteration` is the last one's index (from 0): say it as the console counts
            plain = {("iterations done" if k == "iteration" else k): v for k, v in plain.items()}
            plain["iterations done"] += 1
        if plain:
            lines.append("  extra: " + ", ".join(f"{k}={v}" for k, v in plain.items()))
        return "\n".join(lines)

    def _fresh_lines(self) -> list[str]:
        """Fresh parameters this file does not provide start from their initialization; those
        it provides (a resume) were fresh when the run began, and are loaded now."""
        loaded = set(self.loaded)
        new = [n for n in self.fresh if n not in loaded]
        began = [n for n in self.fresh if n in loaded]
        lines = []
        if new:
            lines.append(_listing("fresh: not in this file, start from their initialization", new))
        if began:
            title = "fresh when the run began (initialized, not from its initial weights)"
            lines.append(_listing(title, began) + "; all loaded from this file")
        return lines


def _listing(title: str, items: list[str]) -> str:
    """Formats `items` as one indented line, cut after a few entries."""
    return f"  {title} ({len(items)}): {listing(items, _MAX_LISTED)}"
