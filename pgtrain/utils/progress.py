"""Progress lines for long waits, in the same form as training's console line.

Training logs ``iter 39/100 |####        | 40% eta 0:00:03 ...``; data generation, evaluation
and prediction log ``<what> 39/100 |####        | 40% eta 0:00:03  0.12 s/<unit>`` through the
logger (so the line reaches the console, ``log.txt`` and Slurm's output alike, which a terminal
progress bar does not), at most every few seconds and once at the end.
"""

import datetime
import logging
import time

from tqdm import tqdm

__all__ = ["Progress", "progress_bar"]


def progress_bar(done: int, total: int, elapsed: float, width: int = 20) -> str:
    """``|#####     |  50%``: tqdm's meter, ASCII, `width` characters of bar."""
    return tqdm.format_meter(
        done, total, elapsed, ncols=width + 7, ascii=True, bar_format="|{bar}| {percentage:3.0f}%"
    )


class Progress:
    """Counts work done and logs a progress line every `interval` seconds and at `close`.

    Usage::

        with Progress("Inference", len(loader), logger, unit="batch") as progress:
            for batch in loader:
                ...
                progress.update()

    Args:
        what: the line's first word (``Generating shapes``, ``Inference``).
        total: how many units there are; None when unknown (no bar, no ETA).
        logger: where the lines go.
        unit: what is counted, for the rate (``image``, ``batch``).
        interval: the least time between two lines, in seconds; the first line comes once
            `interval` has passed, so a wait shorter than that logs only the final line.
    """

    def __init__(
        self,
        what: str,
        total: int | None,
        logger: logging.Logger,
        *,
        unit: str = "item",
        interval: float = 5.0,
    ) -> None:
        self.what, self.total, self.unit = what, total, unit
        self.units = unit + ("es" if unit.endswith(("s", "sh", "ch", "x")) else "s")
        self.done = 0
        self._logger = logger
        self._interval = interval
        self._start = self._last = time.perf_counter()

    def update(self, n: int = 1) -> None:
        """Adds `n` units done; logs a line when `interval` has passed since the last."""
        self.done += n
        now = time.perf_counter()
        if now - self._last >= self._interval:
            self._last = now
            self._logger.info(self.line(now))

    def line(self, now: float | None = None) -> str:
        """The progress line as of `now` (default: the present)."""
        elapsed = (time.perf_counter() if now is None else now) - self._start
        rate = f"{elapsed / self.done:.3g} s/{self.unit}" if self.done else ""
        if not self.total:
            return f"{self.what} {self.done} {self.units}  {rate}".rstrip()
        left = max(self.total - self.done, 0)
        eta = datetime.timedelta(seconds=int(elapsed / self.done * left)) if self.done else "?"
        bar = progress_bar(min(self.done, self.total), self.total, elapsed)
        return f"{self.what} {self.done}/{self.total} {bar} eta {eta}  {rate}".rstrip()

    def close(self) -> None:
        """Logs the final line (with the total time)."""
        elapsed = time.perf_counter() - self._start
        self._logger.info("%s: %d %s in %.2f s", self.what, self.done, self.units, elapsed)

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, exc_type: object, *rest: object) -> None:
        if exc_type is None:
            self.close()
