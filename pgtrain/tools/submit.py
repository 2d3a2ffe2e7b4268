"""Submit a training run to Slurm (or run it with submitit's local executor) with submitit.

    python tools/submit.py --config projects/vit/config.py --nodes 2 --gpus-per-node 8 \\
        --partition gpu --account myproject --time 1-00:00:00 --job-name vit-ft train.strategy=fsdp
    python tools/submit.py --config configs/quick/toy.py --cluster local --tasks-per-node 2 --wait

Each task of the job is one rank (one per GPU; ``--tasks-per-node`` CPU processes without GPUs)
and runs `tools/train_net.py` with the rendezvous from Slurm's environment (NCCL on GPUs, gloo on
CPUs). The job always continues its output folder (``--resume``), so when Slurm signals it before
the time limit or a preemption (submitit's SIGUSR2), every rank stops after the same step, the
checkpoint is saved, and the job requeues itself and resumes there. A new run in a folder that
holds another run is refused here, before anything is submitted, as train_net refuses it; pass
``--resume`` to continue that run. submitit's logs go to ``--folder`` (default
``<train.output_dir>/submitit``). Flags may come before or after the overrides, as with
train_net; every task gets the same overrides and grouping flags (``--head-lr-multiplier``).
"""

import argparse
import math
import os
import re
import shutil
import time

from pgtrain.engine import (
    add_grouping_arguments,
    prepare_run,
    user_errors_exit,
)
from pgtrain.engine.processes.slurm import requeue_after_stop, set_rendezvous_from_job
from pgtrain.errors import ConfigError


class TrainingJob:
    """What every task of the job runs: train_net's command line as one rank of the job.

    submitit pickles it into the job's folder; `checkpoint` is what submitit requeues (the same
    job: it resumes from the output folder's last checkpoint).
    """

    def __init__(self, train_net_args: list[str]) -> None:
        self.train_net_args = list(train_net_args)

    def __call__(self) -> None:
        started = time.time()
        set_rendezvous_from_job()
        from pgtrain.tools import train_net

        try:
            train_net.cli(self.train_net_args)
        except SystemExit as e:
            requeue_after_stop(e.code, started)
            raise

    def checkpoint(self, *args, **kwargs):
        """Called by submitit on rank 0 before it requeues: the same job, which resumes."""
        import submitit

        return submitit.helpers.DelayedSubmission(TrainingJob(self.train_net_args))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", required=True, metavar="FILE", help="a .py or .yaml config")
    parser.add_argument("--resume", action="store_true", help="continue the run in output_dir")
    parser.add_argument("--nodes", type=int, default=1, help="machines")
    parser.add_argument(
        "--gpus-per-node", type=int, default=0, help="GPUs per machine, one task each (0: CPU)"
    )
    parser.add_argument(
        "--tasks-per-node", type=int, default=None, help="processes per machine without GPUs"
    )
    parser.add_argument("--cpus-per-task", type=int, default=None)
    parser.add_argument("--mem-gb", type=float, default=None, help="memory per machine")
    parser.add_argument("--partition", default=None, help="Slurm partition")
    parser.add_argument("--account", default=None, help="Slurm account")
    parser.add_argument(
        "--time",
        default="60",
        metavar="TIME",
        help="time limit: minutes, or Slurm's HH:MM:SS, D-HH, D-HH:MM, D-HH:MM:SS",
    )
    parser.add_argument("--job-name", default=None, help="default: the config file's name")
    parser.add_argument("--folder", default=None, help="submitit's logs and pickles")
    parser.add_argument(
        "--cluster",
        default=None,
        choices=["slurm", "local", "debug"],
        help="default: Slurm where srun exists, else local",
    )
    parser.add_argument(
        "--signal-delay-s",
        type=int,
        default=120,
        help="seconds before the time limit that the job is signalled to save and requeue",
    )
    parser.add_argument(
        "--max-requeues", type=int, default=3, help="time-limit requeues before the job gives up"
    )
    parser.add_argument("--wait", action="store_true", help="wait for the job and show its end")
    add_grouping_arguments(parser)
    parser.add_argument("opts", nargs="*", metavar="key=value", help="config overrides")
    return parser


def submit(args: argparse.Namespace):
    """Checks the arguments, the config and the output folder, submits the job; returns the
    submitit job."""
    cluster, minutes = _check_arguments(args)  # before the folder check, which may move files
    # What every task applies and checks again (train_net logs the notes); the folder once here.
    cfg = prepare_run(args, new_run=True).cfg
    output_dir = cfg.train.output_dir
    tasks = args.gpus_per_node or args.tasks_per_node or 1
    count = ["--num-gpus" if args.gpus_per_node else "--num-processes", str(tasks)]
    multiplier = args.head_lr_multiplier  # repr: the same float in every task
    grouping = [] if multiplier is None else ["--head-lr-multiplier", repr(multiplier)]
    train_net_args = [
        "--config",
        args.config,
        *count,
        "--num-machines",
        str(args.nodes),
        "--resume",  # a requeued job continues; a new run's folder was checked above
        *grouping,
        *args.opts,
    ]
    folder = args.folder or os.path.join(output_dir, "submitit")
    executor = _executor(cluster, args, folder)
    executor.update_parameters(
        name=args.job_name or os.path.splitext(os.path.basename(args.config))[0],
        nodes=args.nodes,
        tasks_per_node=tasks,
        gpus_per_node=args.gpus_per_node,
        cpus_per_task=args.cpus_per_task,
        mem_gb=args.mem_gb,
        timeout_min=minutes,
        slurm_partition=args.partition,
        slurm_account=args.account,
        slurm_signal_delay_s=args.signal_delay_s,
    )
    return executor.submit(TrainingJob(train_net_args))


# The smallest value each count accepts.
_AT_LEAST = {
    "nodes": 1,
    "gpus_per_node": 0,
    "tasks_per_node": 1,
    "cpus_per_task": 1,
    "signal_delay_s": 0,
    "max_requeues": 0,
}


def _check_arguments(args: argparse.Namespace) -> tuple[str, int]:
    """Refuses arguments the job could not run as asked; returns the cluster and the minutes.

    Raises:
        ConfigError: Naming the flag and what it accepts.
    """
    for key, least in _AT_LEAST.items():
        value = getattr(args, key)
        if value is not None and value < least:
            raise ConfigError(f"--{key.replace('_', '-')} {value}: must be at least {least}")
    if args.mem_gb is not None and not (math.isfinite(args.mem_gb) and args.mem_gb > 0):
        raise ConfigError(f"--mem-gb {args.mem_gb}: must be a positive number of GB")
    if args.gpus_per_node and args.tasks_per_node not in (None, args.gpus_per_node):
        raise ConfigError(
            f"--tasks-per-node {args.tasks_per_node} with --gpus-per-node {args.gpus_per_node}: "
            "a run has one task per GPU; leave --tasks-per-node out"
        )
    minutes = _minutes(args.time)
    if args.signal_delay_s >= minutes * 60:
        raise ConfigError(
            f"--signal-delay-s {args.signal_delay_s} is not shorter than --time {args.time} "
            f"({minutes * 60} s): the job would be told to stop as it starts; give a longer "
            "--time or a shorter --signal-delay-s"
        )
    cluster = args.cluster or ("slurm" if shutil.which("srun") else "local")
    if cluster == "slurm" and not shutil.which("srun"):
        raise ConfigError(
            "--cluster slurm: Slurm's srun is not found on this machine; submit from a machine of "
            "the Slurm cluster, or run here with --cluster local"
        )
    tasks = args.gpus_per_node or args.tasks_per_node or 1
    if (cluster != "slurm" and args.nodes > 1) or (cluster == "debug" and tasks > 1):
        raise ConfigError(
            f"--cluster {cluster} runs {'one task' if cluster == 'debug' else 'one machine'} "
            f"(--nodes {args.nodes}, {tasks} task(s) per node asked); submit to Slurm for more"
        )
    return cluster, minutes


# Slurm's --time formats: minutes, or [D-]HH:MM:SS, D-HH, D-HH:MM. Its MM:SS is left out: users
# who write 24:00 mean a day more often than 24 minutes.
_TIME = re.compile(r"^(?:(\d+)|(?:(\d+)-)?(\d+):(\d+):(\d+)|(\d+)-(\d+)(?::(\d+))?)$")


def _minutes(text: str) -> int:
    """Turns a ``--time`` value into whole minutes (seconds round up).

    Raises:
        ConfigError: Not one of the formats, or not positive.
    """
    match = _TIME.match(text.strip())
    if not match:
        raise ConfigError(
            f"--time {text}: write minutes (1440), HH:MM:SS (24:00:00), D-HH (1-00) or "
            "D-HH:MM:SS (1-00:00:00); MM:SS is not accepted, as 24:00 would mean 24 minutes"
        )
    m, d1, h1, m1, s1, d2, h2, m2 = (int(g) if g else 0 for g in match.groups())
    seconds = m * 60 + (d1 + d2) * 86400 + (h1 + h2) * 3600 + (m1 + m2) * 60 + s1
    if seconds <= 0:
        raise ConfigError(f"--time {text}: must be longer than zero")
    return math.ceil(seconds / 60)


def _executor(cluster: str, args: argparse.Namespace, folder: str):
    """submitit's executor for `cluster`, whose parameters take the shared names (nodes,
    tasks_per_node, ...) and slurm_* ones."""
    import submitit

    if cluster == "local":  # its signal delay is not reachable through AutoExecutor
        executor = submitit.LocalExecutor(folder, max_num_timeout=args.max_requeues)
        executor.update_parameters(signal_delay_s=args.signal_delay_s)
        return _SharedNames(executor)
    return submitit.AutoExecutor(
        folder=folder, cluster=cluster, slurm_max_num_timeout=args.max_requeues
    )


class _SharedNames:
    """The local executor behind AutoExecutor's parameter names (slurm_* ones are dropped)."""

    def __init__(self, executor) -> None:
        self._executor = executor

    def update_parameters(self, **kwargs) -> None:
        keep = {"timeout_min", "tasks_per_node", "gpus_per_node"}
        self._executor.update_parameters(
            **{k: v for k, v in kwargs.items() if k in keep and v is not None}
        )

    def submit(self, fn, *args, **kwargs):
        return self._executor.submit(fn, *args, **kwargs)


def cli(argv: list[str] | None = None):
    """Parses the command line (`argv`, default ``sys.argv[1:]``; flags and overrides in any
    order), submits the job and returns it (after its end with ``--wait``)."""
    args = build_parser().parse_intermixed_args(argv)
    with user_errors_exit():
        job = submit(args)
        print(f"Submitted job {job.job_id}; logs: {job.paths.stdout} (rank 0)")
        if args.wait:
            job.wait()
            print(f"Job {job.job_id} ended: {job.state}")
        return job


if __name__ == "__main__":
    cli()
