"""Writers that turn the event storage into a console line, JSON lines and TensorBoard scalars
(and images)."""

import datetime
import json
import logging
import math
import time
from collections.abc import Sequence
from typing import Any

from iopath.common.file_io import g_pathmgr

from pgtrain.errors import PgtrainError
from pgtrain.utils.events import EventStorage
from pgtrain.utils.file_io import write_text_atomically
from pgtrain.utils.progress import progress_bar

__all__ = ["EventWriter", "ConsoleWriter", "JSONWriter", "TensorboardWriter"]

logger = logging.getLogger(__name__)


class EventWriter:
    """Writes what the storage recorded since the last call."""

    def start(self, start_iter: int) -> None:
        """Called once before training starts after `start_iter` iterations done (0, or the
        resumed run's)."""

    def write(self, storage: EventStorage) -> None:
        """Writes the newest metrics."""
        raise NotImplementedError

    def close(self) -> None:
        """Flushes and releases files."""


class _SinceLastWrite:
    """Remembers which iteration each key was last written at, so each value is written once."""

    def __init__(self) -> None:
        self._written: dict[str, int] = {}

    def new_items(self, storage: EventStorage, window: int) -> dict[str, tuple[float, int]]:
        items = {
            name: (value, it)
            for name, (value, it) in storage.latest_smoothed(window).items()
            if it > self._written.get(name, -1)
        }
        self._written.update({name: it for name, (_, it) in items.items()})
        return items


class JSONWriter(EventWriter):
    """Appends one JSON object per write to `path`: ``{"iteration": 20, "total_loss": ...}``
    (iterations done, as the console's "iter 20/100" and the checkpoint ``model_0000020.pth``
    count them), with ``"epoch"`` (epochs done, e.g. 2.5) when `iters_per_epoch` is given and
    ``"samples"`` (samples trained) when the effective `batch` is.

    Values recorded at different iterations since the last write (e.g. an evaluation) go in
    separate lines, each stamped with its own iteration. `start` keeps only the lines of what
    came before (rewritten atomically), so a resumed run that repeats the iterations after its
    checkpoint holds each iteration once, and a new run starts an empty file. "Before" is by
    samples where both the line and this run know them (a resume at another batch counts
    iterations of another size), else by iteration. A file of the old numbering (iterations
    from 0; set `zero_based` before `start`) has its kept lines renumbered.
    """

    def __init__(
        self,
        path: str,
        window: int = 20,
        iters_per_epoch: int | None = None,
        batch: int | None = None,
    ) -> None:
        self._path = path
        self._iters_per_epoch = iters_per_epoch
        self._batch = batch
        self._file: Any = None
        self._window = window
        self._since = _SinceLastWrite()
        self.zero_based = False  # the file was written by the old numbering (from 0)

    def start(self, start_iter: int) -> None:
        if g_pathmgr.exists(self._path):
            with g_pathmgr.open(self._path) as f:
                kept = [line for line in f if self._before(line, start_iter)]
            if self.zero_based:
                kept = [_renumbered(line) for line in kept]
            write_text_atomically(self._path, "".join(kept))
        self._file = g_pathmgr.open(self._path, "a")

    def write(self, storage: EventStorage) -> None:
        if self._file is None:
            self._file = g_pathmgr.open(self._path, "a")
        by_iter: dict[int, dict[str, Any]] = {}
        for name, (value, it) in self._since.new_items(storage, self._window).items():
            # Strict JSON has no NaN: an undefined metric (e.g. AP with no large objects) is null.
            by_iter.setdefault(it, self._stamp(it))[name] = value if math.isfinite(value) else None
        try:
            for it in sorted(by_iter):
                self._file.write(json.dumps(by_iter[it], sort_keys=False) + "\n")
            self._file.flush()
        except OSError as e:
            raise PgtrainError(
                f"could not write {self._path} ({e.strerror or e}); check that the output folder "
                "is writable and has free space"
            ) from e

    def _before(self, line: str, start_iter: int) -> bool:
        """Whether a line of the file records what came before `start_iter`."""
        samples = _field(line, "samples")
        if self._batch and samples is not None:
            return samples <= start_iter * self._batch
        done = _field(line, "iteration", math.inf) + (1 if self.zero_based else 0)
        return done <= start_iter

    def _stamp(self, it: int) -> dict[str, Any]:
        """``{"iteration": it + 1}`` (iterations done after the one of index `it`), with the
        epochs and the samples done where known."""
        stamp: dict[str, Any] = {"iteration": it + 1}
        if self._iters_per_epoch:
            stamp["epoch"] = round((it + 1) / self._iters_per_epoch, 4)
        if self._batch:
            stamp["samples"] = (it + 1) * self._batch
        return stamp

    def close(self) -> None:
        if self._file is not None:
            self._file.close()


def _renumbered(line: str) -> str:
    """A metrics line of the old numbering (from 0) with ``iteration`` as iterations done."""
    try:
        record = json.loads(line)
        record["iteration"] += 1
    except (ValueError, KeyError, TypeError):
        return line
    return json.dumps(record) + "\n"


def _field(line: str, key: str, missing: float | None = None) -> float | None:
    """A number a metrics line records; `missing` for a damaged line or one without it."""
    try:
        return float(json.loads(line)[key])
    except (ValueError, KeyError, TypeError):
        return missing


class TensorboardWriter(EventWriter):
    """Writes every scalar to TensorBoard under its storage name (``lr/backbone``, ...), and
    the validation images `put_images` is given (``val/predictions/<i>``)."""

    def __init__(self, log_dir: str, window: int = 20) -> None:
        from torch.utils.tensorboard import SummaryWriter  # imports tensorboard: only when used

        self._writer = SummaryWriter(log_dir)
        self._window = window
        self._since = _SinceLastWrite()

    def write(self, storage: EventStorage) -> None:
        for name, (value, it) in self._since.new_items(storage, self._window).items():
            self._writer.add_scalar(name, value, it + 1)  # iterations done, as the console
        self._writer.flush()

    def put_images(self, images: Sequence[Any], step: int, tag: str = "val/predictions") -> None:
        """Writes H x W x 3 uint8 images (e.g. predictions drawn after an evaluation) at `step`
        (iterations done) as ``<tag>/0``, ``<tag>/1``, ..."""
        for i, image in enumerate(images):
            self._writer.add_image(f"{tag}/{i}", image, step, dataformats="HWC")
        self._writer.flush()

    def close(self) -> None:
        self._writer.close()


class ConsoleWriter(EventWriter):
    """Logs one line: iteration, a progress bar, ETA, losses, every group's LR, times.

    Example: ``iter 39/100 |####        | 40% eta 0:00:03  total_loss 0.41  loss_cls 0.41
    lr backbone 1.00e-03 head 1.00e-02  time 0.051 data 0.002``.
    """

    def __init__(
        self,
        max_iter: int,
        window: int = 20,
        bar_width: int = 20,
        iters_per_epoch: int | None = None,
    ) -> None:
        self._max_iter = max_iter
        self._iters_per_epoch = iters_per_epoch
        self._window = window
        self._bar_width = bar_width
        self._start = time.perf_counter()

    def write(self, storage: EventStorage) -> None:
        it = storage.iter
        latest = storage.latest_smoothed(self._window)
        losses = "  ".join(
            f"{k} {v:.4g}" for k, (v, i) in latest.items() if "loss" in k and i == it
        )
        lrs = " ".join(
            f"{k[3:]} {v:.2e}" for k, (v, i) in latest.items() if k.startswith("lr/") and i == it
        )
        parts = [f"iter {it + 1}/{self._max_iter}", self._bar(it + 1), f"eta {self._eta(storage)}"]
        if self._iters_per_epoch:
            parts.insert(1, f"epoch {(it + 1) / self._iters_per_epoch:.2f}")
        parts += [losses, f"lr {lrs}" if lrs else ""]
        if storage.has("time"):
            parts.append(f"time {storage.history('time').median(self._window):.4f}")
        if storage.has("data_time"):
            parts.append(f"data {storage.history('data_time').median(self._window):.4f}")
        logger.info("  ".join(p for p in parts if p))

    def _bar(self, done: int) -> str:
        elapsed = time.perf_counter() - self._start
        return progress_bar(done, self._max_iter, elapsed, self._bar_width)

    def _eta(self, storage: EventStorage) -> str:
        if not storage.has("time"):
            return "?"
        seconds = storage.history("time").median(1000) * (self._max_iter - storage.iter - 1)
        return str(datetime.timedelta(seconds=int(seconds)))
