"""EventStorage: the metrics of a run, per iteration, for writers and hooks to read."""

from collections.abc import Iterator
from contextlib import contextmanager

from fvcore.common.history_buffer import HistoryBuffer

__all__ = ["EventStorage", "get_event_storage", "event_storage"]

_STACK: list["EventStorage"] = []


class EventStorage:
    """Scalars put during training, each with its history (fvcore `HistoryBuffer`).

    ``storage.iter`` is the iteration the trainer is running; `put_scalar` stamps values with it.
    A smoothing hint says whether writers should report the median over a window (losses, times)
    or the latest value (learning rates, evaluation results).
    """

    def __init__(self, start_iter: int = 0, max_history: int = 100_000) -> None:
        self.iter = start_iter
        self._max_history = max_history
        self._history: dict[str, HistoryBuffer] = {}
        self._latest: dict[str, tuple[float, int]] = {}
        self._smoothing: dict[str, bool] = {}

    def put_scalar(self, name: str, value: float, smoothing_hint: bool = True) -> None:
        """Records `value` for `name` at the current iteration."""
        value = float(value)
        buffer = self._history.get(name)
        if buffer is None:
            buffer = self._history[name] = HistoryBuffer(self._max_history)
            self._smoothing[name] = smoothing_hint
        buffer.update(value, self.iter)
        self._latest[name] = (value, self.iter)

    def history(self, name: str) -> HistoryBuffer:
        """Returns the history of `name`; raises KeyError naming the known keys if absent."""
        if name not in self._history:
            raise KeyError(
                f"no scalar '{name}' in the event storage; known: {sorted(self._history)}"
            )
        return self._history[name]

    def has(self, name: str) -> bool:
        """Says whether `name` was ever recorded."""
        return name in self._history

    def latest(self) -> dict[str, tuple[float, int]]:
        """Returns ``{name: (latest value, iteration)}``."""
        return dict(self._latest)

    def latest_smoothed(self, window: int = 20) -> dict[str, tuple[float, int]]:
        """Returns the latest values, as the median over `window` for keys with a smoothing hint."""
        out = {}
        for name, (value, it) in self._latest.items():
            if self._smoothing[name]:
                value = self._history[name].median(window)
            out[name] = (value, it)
        return out


def get_event_storage() -> EventStorage:
    """Returns the storage of the running trainer (models may log through it)."""
    if not _STACK:
        raise RuntimeError("get_event_storage() needs a running trainer (inside `event_storage`)")
    return _STACK[-1]


@contextmanager
def event_storage(storage: EventStorage) -> Iterator[EventStorage]:
    """Makes `storage` the one `get_event_storage` returns for the duration of the block."""
    _STACK.append(storage)
    try:
        yield storage
    finally:
        _STACK.pop()
