"""Runs as a task of a submitit job (Slurm, or submitit's local executor): the rendezvous from the
job's environment, and the requeue after a preemption-safe stop.

Every task of the job is one rank. `set_rendezvous_from_job` writes the variables torchrun would
(``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``LOCAL_WORLD_SIZE``, ``MASTER_ADDR``, ``MASTER_PORT``)
from submitit's ``JobEnvironment``, so `pgtrain.engine.processes.launch` joins the process group
exactly as under torchrun.

Slurm sends submitit's signal (``SIGUSR2``, ``--signal=USR2@<delay>``) before the time limit and,
with the usual preemption settings, when it preempts the job. pgtrain catches it like SIGTERM: every
rank finishes the same step, the checkpoint is saved, and training stops with status ``128 +
signal``. `requeue_after_stop` then asks submitit to requeue the job (rank 0 does, through
submitit's own checkpoint-and-requeue path, which counts the timeouts); the requeued job resumes
from that checkpoint in the same output folder. SIGTERM alone (``scancel``) stops without a
requeue, as submitit does.
"""

import logging
import os
import re
import signal
from typing import Any

from pgtrain.engine.processes.preemption import stop_exit_code

__all__ = ["job_port", "requeue_after_stop", "requeue_signal", "set_rendezvous_from_job"]

logger = logging.getLogger(__name__)


def requeue_signal() -> int:
    """The signal submitit's jobs receive before their time limit (``SUBMITIT_PREEMPT_SIGNAL``,
    SIGUSR2 by default)."""
    name = os.environ.get("SUBMITIT_PREEMPT_SIGNAL", "USR2")
    return getattr(signal, f"SIG{name}", signal.SIGUSR2)


def job_port(job_id: str) -> int:
    """A rendezvous port derived from the job id, the same on every node of the job."""
    digits = re.sub(r"\D", "", str(job_id)) or "0"
    return 20000 + int(digits[-8:]) % 20000


def set_rendezvous_from_job(env: Any = None) -> dict[str, str]:
    """Sets torchrun's variables from submitit's ``JobEnvironment`` (this task's); returns them.

    Must run inside a submitit job.
    """
    if env is None:
        import submitit

        env = submitit.JobEnvironment()
    values = {
        "RANK": str(env.global_rank),
        "WORLD_SIZE": str(env.num_tasks),
        "LOCAL_RANK": str(env.local_rank),
        "LOCAL_WORLD_SIZE": str(env.num_tasks // env.num_nodes),
        "MASTER_ADDR": str(env.hostnames[0]),
        "MASTER_PORT": str(job_port(env.job_id)),
    }
    os.environ.update(values)
    return values


def requeue_after_stop(exit_code: Any, started: float) -> None:
    """After training stopped with `exit_code`: if the stop was submitit's signal, requeue the
    job through submitit (rank 0; the other ranks return). `started` is when this task started
    (``time.time()``), for submitit's timed-out-or-preempted decision.

    Raises:
        SystemExit: from submitit's requeue on rank 0 (the local executor's requeue status, or
            after ``scontrol requeue`` on Slurm).
        submitit.core.utils.UncompletedJobError: the job timed out more often than allowed.
    """
    if exit_code != stop_exit_code(requeue_signal()):
        return
    import submitit
    from submitit.core.job_environment import SignalHandler
    from submitit.core.utils import DelayedSubmission

    env = submitit.JobEnvironment()
    if env.global_rank != 0:
        return
    delayed = DelayedSubmission.load(env.paths.submitted_pickle)
    handler = SignalHandler(env, env.paths, delayed)
    handler._start_time = started  # the task's start, not now: timed out or preempted
    name = signal.Signals(exit_code - 128).name
    logger.warning("Stopped on %s and saved: requeueing the job", name)
    handler.checkpoint_and_try_requeue(requeue_signal())
