"""Start a function in one process per GPU (or per CPU worker), on one or several machines.

`launch` serves three cases with the same call in a training script:

- world size 1: it calls the function in this process, without a process group;
- several processes: it spawns one process per local rank, each joining the process group (NCCL
  on CUDA, gloo on CPU) before it calls the function;
- under ``torchrun``: torchrun already started the processes, so it joins the process group
  described by the environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``, ...)
  and calls the function.
"""

import contextlib
import logging
import os
import pickle
import signal
import socket
import sys
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from pgtrain import errors
from pgtrain.config.schema import setting
from pgtrain.engine.processes.preemption import PREEMPTION_SIGNALS, STALL_EXIT_CODE, stop_exit_code
from pgtrain.errors import ConfigError, PgtrainError
from pgtrain.utils import comm

__all__ = ["launch", "DEFAULT_TIMEOUT_S", "LaunchSettings", "default_timeout"]

logger = logging.getLogger(__name__)


@dataclass
class LaunchSettings:
    """What the processes of a run agree on: how long a collective waits for the others."""

    dist_timeout_s: float | None = setting(
        None,
        "seconds a collective waits for the other ranks; a rank silent for half of it (at most "
        "60 s) is named and the job exits with status 75",
        gt=0,
        null="wait 600 s on gloo, 1800 s on NCCL",
    )


# How long a collective waits for the other ranks when no timeout is given: short on CPU
# (gloo), where a stall is a bug, long on NCCL, where a large evaluation on rank 0 may keep the
# others waiting.
DEFAULT_TIMEOUT_S = {"gloo": 600.0, "nccl": 1800.0}


def default_timeout(backend: str) -> timedelta:
    """The collective timeout of `backend` when ``train.dist_timeout_s`` is None."""
    return timedelta(seconds=DEFAULT_TIMEOUT_S.get(backend, DEFAULT_TIMEOUT_S["nccl"]))


_TORCHRUN_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK")
_USER_ERROR_EXIT_CODE = 2  # as the tools exit on a user error


def launch(
    main_func: Callable[..., Any],
    num_gpus_per_machine: int,
    num_machines: int = 1,
    machine_rank: int = 0,
    dist_url: str | None = "auto",
    args: tuple = (),
    timeout: timedelta | None = None,
    *,
    backend: str | None = None,
) -> None:
    """Runs ``main_func(*args)`` in every process of a (possibly distributed) run.

    Call it under ``if __name__ == "__main__":`` in a script: spawned processes import the script
    again, and without the guard each would launch anew. Under torchrun the spawn arguments are
    ignored (a warning says so when they disagree with the environment). An exception in any
    spawned process stops the others and is raised here as
    `torch.multiprocessing.ProcessRaisedException`, whose message holds the process's traceback.

    Args:
        main_func: the function every process runs; spawned processes import it by name, so it
            must be defined at module level.
        num_gpus_per_machine: processes per machine (one per GPU on CUDA).
        num_machines: machines taking part.
        machine_rank: this machine's index in [0, num_machines).
        dist_url: where the processes meet, e.g. ``tcp://10.0.0.1:23456`` (machine 0's address);
            "auto" or None picks a free local port, which only works on one machine.
        args: positional arguments for `main_func`; they are pickled for each process.
        timeout: how long collectives wait for other ranks; None: the backend's default
            (`default_timeout`).
        backend: process-group backend; None means "nccl" when CUDA is available, else "gloo".

    Raises:
        ConfigError: inconsistent process counts, ranks, URL or backend.
    """
    if dist.is_available() and dist.is_initialized():
        logger.info("A process group already exists; calling %s directly", _name(main_func))
        main_func(*args)
        return
    if all(name in os.environ for name in _TORCHRUN_VARIABLES):
        _launch_from_environment(
            main_func, args, timeout, backend, num_gpus_per_machine, num_machines
        )
        return
    _check_counts(num_gpus_per_machine, num_machines, machine_rank)
    world_size = num_machines * num_gpus_per_machine
    if world_size == 1:
        main_func(*args)
        return
    backend = _resolve_backend(backend, num_gpus_per_machine)
    timeout = timeout or default_timeout(backend)
    dist_url = _resolve_url(dist_url, num_machines)
    _check_picklable(main_func)
    worker_args = (main_func, args, machine_rank, num_gpus_per_machine, world_size, backend)
    # A worker's user error comes back as data (its class name and message), not as a traceback
    # to be read: this process raises it again, so the tools print it as one line.
    user_errors = mp.get_context("spawn").SimpleQueue()
    context = mp.start_processes(
        _distributed_worker,
        args=(*worker_args, dist_url, timeout, user_errors),
        nprocs=num_gpus_per_machine,
        start_method="spawn",
        join=False,
    )
    _join_forwarding_signals(context, user_errors)


def _join_forwarding_signals(context: mp.ProcessContext, user_errors: Any) -> None:
    """Waits for the spawned processes, passing a preemption signal on to each of them.

    A scheduler may signal only this launcher; the workers save and exit with ``128 +
    signal`` (or `STALL_EXIT_CODE` when one named a stalled rank), and this process exits with
    the same status instead of a traceback. A worker's user error is raised here again.
    """

    def forward(signum: int, frame: object) -> None:
        for process in context.processes:
            if process.is_alive():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(process.pid, signum)

    previous = {s: signal.signal(s, forward) for s in PREEMPTION_SIGNALS}
    try:
        while not context.join(grace_period=5):
            pass
    except mp.ProcessExitedException as e:
        if e.exit_code == _USER_ERROR_EXIT_CODE and not user_errors.empty():
            name, message = user_errors.get()
            raise getattr(errors, name, PgtrainError)(message) from None
        stopped = {stop_exit_code(s) for s in PREEMPTION_SIGNALS} | {STALL_EXIT_CODE}
        if e.exit_code == STALL_EXIT_CODE:
            print(
                f"error: a rank stopped making progress (the log names it); the job stopped "
                f"with status {STALL_EXIT_CODE}; continue it with --resume",
                file=sys.stderr,
            )
        if e.exit_code in stopped:
            raise SystemExit(e.exit_code) from None
        raise
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _name(func: Callable[..., Any]) -> str:
    return getattr(func, "__qualname__", repr(func))


def _check_counts(num_gpus_per_machine: int, num_machines: int, machine_rank: int) -> None:
    if num_gpus_per_machine < 1:
        raise ConfigError(
            f"num_gpus_per_machine must be >= 1 (processes per machine), got {num_gpus_per_machine}"
        )
    if num_machines < 1:
        raise ConfigError(f"num_machines must be >= 1, got {num_machines}")
    if not 0 <= machine_rank < num_machines:
        raise ConfigError(
            f"machine_rank must be in [0, num_machines={num_machines}), got {machine_rank}; "
            "give each machine its own index starting at 0"
        )


def _resolve_backend(backend: str | None, num_local_processes: int) -> str:
    """Returns the backend to use, checking that it exists and that NCCL has enough GPUs."""
    if backend is None:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    if not dist.is_available() or not dist.is_backend_available(backend):
        raise ConfigError(
            f"backend {backend!r} is not available in this torch build; use 'gloo' (CPU), "
            "'nccl' (CUDA) or None to choose by device"
        )
    if backend == "nccl":
        gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if num_local_processes > gpus:
            raise ConfigError(
                f"backend 'nccl' needs one GPU per process but num_gpus_per_machine="
                f"{num_local_processes} and this machine has {gpus} GPU(s); lower "
                "num_gpus_per_machine or use backend='gloo'"
            )
    return backend


def _resolve_url(dist_url: str | None, num_machines: int) -> str:
    if dist_url not in (None, "auto"):
        return dist_url
    if num_machines != 1:
        raise ConfigError(
            f"dist_url='auto' only works on one machine (num_machines={num_machines}); pass "
            "dist_url='tcp://<machine 0 address>:<port>' on every machine"
        )
    return f"tcp://127.0.0.1:{_find_free_port()}"


def _find_free_port() -> int:
    # Port 0 asks the OS for a free port; another program could take it before the processes
    # bind it, a small race every launcher of this kind accepts.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _check_picklable(main_func: Callable[..., Any]) -> None:
    try:
        pickle.dumps(main_func)
    except Exception as e:  # pickling raises several types (PicklingError, AttributeError, ...)
        raise PgtrainError(
            f"main_func {_name(main_func)} cannot be sent to spawned processes ({e}); define it "
            "at module level so they can import it by name"
        ) from e


def _distributed_worker(
    local_rank: int,
    main_func: Callable[..., Any],
    args: tuple,
    machine_rank: int,
    num_local_processes: int,
    world_size: int,
    backend: str,
    dist_url: str,
    timeout: timedelta,
    user_errors: Any = None,
) -> None:
    """Joins the process group as one spawned process, runs `main_func` and leaves the group."""
    device_id = None
    if backend == "nccl":
        torch.cuda.set_device(local_rank)
        # Binding the device lets NCCL set up eagerly and keeps barriers off other GPUs.
        device_id = torch.device("cuda", local_rank)
    elif "OMP_NUM_THREADS" not in os.environ:
        # Each process would otherwise use every core, so N processes oversubscribe N-fold.
        torch.set_num_threads(max(1, _num_cpus() // num_local_processes))
    dist.init_process_group(
        backend,
        init_method=dist_url,
        world_size=world_size,
        rank=machine_rank * num_local_processes + local_rank,
        timeout=timeout,
        device_id=device_id,
    )
    comm.create_local_process_group(num_local_processes)
    try:
        _run_and_leave_group(main_func, args)
    except PgtrainError as e:
        if user_errors is None:
            raise
        user_errors.put((type(e).__name__, str(e)))
        raise SystemExit(_USER_ERROR_EXIT_CODE) from None


def _num_cpus() -> int:
    if hasattr(os, "sched_getaffinity"):  # the cores this process may use (containers, taskset)
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def _run_and_leave_group(main_func: Callable[..., Any], args: tuple) -> None:
    main_func(*args)
    # Only after success: on an error the process exits at once, so the launcher reports this
    # error and not the connection errors that tearing down the group would cause on other ranks.
    if dist.is_initialized():  # main_func may have left the group itself
        comm.synchronize()
        dist.destroy_process_group()


def _launch_from_environment(
    main_func: Callable[..., Any],
    args: tuple,
    timeout: timedelta | None,
    backend: str | None,
    num_gpus_per_machine: int,
    num_machines: int,
) -> None:
    """Runs `main_func` in a process that torchrun started, joining the group it describes."""
    rank, world_size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ["LOCAL_RANK"])
    local_size = int(os.environ.get("LOCAL_WORLD_SIZE", world_size))
    if rank == 0 and (num_gpus_per_machine, num_machines) != (local_size, world_size // local_size):
        logger.warning(
            "Running under torchrun with %d process(es) on each of %d machine(s); ignoring "
            "launch(num_gpus_per_machine=%d, num_machines=%d)",
            local_size, world_size // local_size, num_gpus_per_machine, num_machines,
        )  # fmt: skip
    if world_size == 1 and "MASTER_ADDR" not in os.environ:  # no rendezvous given: no group
        main_func(*args)
        return
    # A group even of one process (torchrun --nproc-per-node 1): FSDP on one GPU shards in it.
    backend = _resolve_backend(backend, local_size)
    timeout = timeout or default_timeout(backend)
    device_id = None
    if backend == "nccl":
        torch.cuda.set_device(local_rank)
        device_id = torch.device("cuda", local_rank)
    dist.init_process_group(backend, init_method="env://", timeout=timeout, device_id=device_id)
    _run_and_leave_group(main_func, args)
