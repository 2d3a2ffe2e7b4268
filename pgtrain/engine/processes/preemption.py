"""Preemption and stalls: stop cleanly on SIGTERM / SIGUSR1 / SIGUSR2, and never hang silently.

Slurm and Kubernetes send SIGTERM (Slurm's ``--signal`` often SIGUSR1, submitit's jobs SIGUSR2)
some time before killing a job. `StopSignal` records the signal; the trainer finishes the current
step, every rank agrees to stop at the same iteration, the checkpointer saves, and the process
exits with status ``128 + signal`` (143 for SIGTERM), so a scheduler or a wrapper script can tell
a preemption from a failure and requeue with ``--resume`` (tools/submit.py's jobs requeue
themselves on SIGUSR2: `pgtrain.engine.processes.slurm`).

`StallWatchdog` runs a thread per rank that writes a heartbeat into the process group's store
and reads the others'; a rank whose heartbeat stops (a frozen process or machine) is named in
the log, and the job exits with `STALL_EXIT_CODE` instead of waiting for the collective timeout.
"""

import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch.distributed as dist

from pgtrain.utils import comm

__all__ = [
    "PREEMPTION_SIGNALS",
    "STALL_EXIT_CODE",
    "StallWatchdog",
    "StopSignal",
    "stop_exit_code",
    "train_preemptibly",
]

logger = logging.getLogger(__name__)

# SIGUSR2 is the signal submitit's jobs get before their time limit (tools/submit.py requeues).
PREEMPTION_SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2)
# EX_TEMPFAIL: the job may succeed if run again (after the frozen machine is replaced).
STALL_EXIT_CODE = 75


def stop_exit_code(signum: int) -> int:
    """The status a run stopped by signal `signum` exits with: 128 + the signal, as a shell
    reports a process killed by it (143 for SIGTERM), so schedulers and wrappers can tell."""
    return 128 + int(signum)


class StopSignal:
    """Records the first preemption signal this process receives.

    Install it in the main thread (Python runs signal handlers there). The handler only sets a
    flag, so a step in progress is never interrupted; `uninstall` restores the previous handlers.
    """

    def __init__(self, signals: Sequence[int] = PREEMPTION_SIGNALS) -> None:
        self.signals = tuple(signals)
        self.signum: int | None = None
        self._previous: dict[int, object] = {}

    def install(self) -> "StopSignal":
        """Installs the handlers; returns self."""
        if threading.current_thread() is threading.main_thread():
            for signum in self.signals:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def uninstall(self) -> None:
        """Restores the handlers that were there before `install`."""
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()

    @property
    def requested(self) -> bool:
        """Whether a preemption signal arrived."""
        return self.signum is not None

    def _handle(self, signum: int, frame: object) -> None:
        if self.signum is None:
            self.signum = signum


class StallWatchdog:
    """Names a rank that stopped making progress and ends the job, within `timeout` seconds.

    Every rank's thread writes ``time iteration`` to the default process group's store every
    few seconds and reads the other ranks' entries. A live process keeps beating while it waits
    in a collective or evaluates, so only a process that is frozen (SIGSTOP, a hung machine) or
    gone falls silent; the first rank to see an entry older than `timeout` logs which rank and
    at which iteration, and exits with `STALL_EXIT_CODE`.

    Args:
        timeout: seconds of silence after which a rank counts as stalled.
        progress: returns this rank's current iteration (for the report).
        exit: what to call on a stall (tests replace it); default ``os._exit``.
    """

    def __init__(
        self,
        timeout: float,
        progress: Callable[[], int],
        *,
        exit: Callable[[int], None] = os._exit,
    ) -> None:
        self.timeout = float(timeout)
        self.interval = max(0.2, min(5.0, self.timeout / 5))
        self._progress = progress
        self._exit = exit
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> "StallWatchdog":
        """Starts the heartbeat thread (a no-op in a single process); returns self."""
        if not dist.is_initialized() or dist.get_world_size() == 1:
            return self
        try:
            store = dist.distributed_c10d._get_default_store()
        except (RuntimeError, AttributeError) as e:
            logger.warning("No stall detection: the process group has no store (%s)", e)
            return self
        self._thread = threading.Thread(
            target=self._run, args=(store,), name="pgtrain-stall-watchdog", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stops the thread."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2 * self.interval)

    def _run(self, store: dist.Store) -> None:
        rank, world = dist.get_rank(), dist.get_world_size()
        started = time.time()
        while not self._stop.wait(self.interval):
            now = time.time()
            store.set(f"pgtrain/heartbeat/{rank}", f"{now} {self._progress()}")
            for other in range(world):
                if other == rank:
                    continue
                seen, iteration = _heartbeat(store, other, started)
                if now - seen > self.timeout:
                    logger.error(
                        "Rank %d stopped making progress: no heartbeat for %.0f s (last seen at "
                        "iteration %s; this is rank %d at iteration %d). Stopping the job; "
                        "continue it with --resume",
                        other,
                        now - seen,
                        iteration,
                        rank,
                        self._progress(),
                    )
                    self._exit(STALL_EXIT_CODE)
                    return


def _heartbeat(store: dist.Store, rank: int, started: float) -> tuple[float, str]:
    """Returns (time, iteration) of `rank`'s last heartbeat; before its first, the start time."""
    key = f"pgtrain/heartbeat/{rank}"
    if not store.check([key]):
        return started, "none yet"
    seen, _, iteration = store.get(key).decode().partition(" ")
    return float(seen), iteration


def train_preemptibly(
    trainer: Any, start_iter: int, max_iter: int, *, stall_timeout: float
) -> None:
    """Runs ``trainer.train`` with a `StopSignal` and a `StallWatchdog` around it.

    After a stop on request every rank waits for rank 0's save, then the process exits with
    ``SystemExit(128 + signal)``.
    """
    stop = trainer.stop_signal = StopSignal().install()
    watchdog = StallWatchdog(stall_timeout, lambda: trainer.iter).start()
    try:
        trainer.train(start_iter, max_iter)
    finally:
        watchdog.stop()
        stop.uninstall()
    if not trainer.stop_requested:
        return
    comm.synchronize()  # no rank leaves before rank 0 has saved
    signum = stop.signum or signal.SIGTERM  # this rank may not have received it itself
    logger.warning(
        "Stopped by %s after iteration %d with a checkpoint saved; continue with --resume",
        signal.Signals(signum).name,
        trainer.iter,  # iterations done, as the console, checkpoints and metrics.json count
    )
    raise SystemExit(stop_exit_code(signum))
