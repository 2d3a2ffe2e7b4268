"""tools/submit.py's command line, as users type it, in-process: what reaches submitit and what
every task's train_net runs, and the one-line refusals before anything is submitted (no job, and
no file of the output folder moved). The submitted run itself is tests/tools/test_submit.py."""

import os
import shutil

import pytest
from omegaconf import OmegaConf

from pgtrain.config import LazyConfig
from pgtrain.engine import apply_grouping_arguments, default_argument_parser
from tests._repo_configs import TOY
from tools import submit


class Recorded:
    """Stands in for submitit's executor: keeps the parameters and the job it was given."""

    job_id = "1"

    class paths:  # noqa: N801 (submitit's attribute name)
        stdout = "log"

    def __init__(self, cluster):
        self.cluster, self.parameters, self.job = cluster, {}, None

    def update_parameters(self, **kwargs):
        self.parameters.update(kwargs)

    def submit(self, job):
        self.job = job
        return self


@pytest.fixture
def submitted(monkeypatch):
    """Runs tools/submit.py's command line; returns the recorded executor (None if refused)."""
    made = []

    def executor(cluster, args, folder):
        made.append(Recorded(cluster))
        return made[-1]

    monkeypatch.setattr(submit, "_executor", executor)
    monkeypatch.setattr(shutil, "which", lambda name: None)  # no Slurm, wherever this runs

    def run(*argv):
        submit.cli(["--config", TOY, *argv])
        return made[-1] if made else None

    return run


def test_flags_after_the_overrides_are_flags_and_every_task_gets_the_same_config(
    submitted, tmp_path
):
    """Observed: flags after an override (as train_net takes them) were refused as overrides,
    and --head-lr-multiplier was not taken at all, so no task could run with it."""
    out = str(tmp_path / "run")
    overrides = [f"train.output_dir={out}", "train.max_iter=7", "optimizer.lr=0.02"]
    job = submitted(
        overrides[0], "--cluster", "local", *overrides[1:], "--tasks-per-node", "2",
        "--head-lr-multiplier", "10", "--time", "1-00:00:00", "--signal-delay-s", "30",
    )  # fmt: skip
    assert job.cluster == "local"
    assert job.parameters["tasks_per_node"] == 2 and job.parameters["timeout_min"] == 1440
    assert job.parameters["slurm_signal_delay_s"] == 30
    forwarded = job.job.train_net_args
    # What each task's train_net parses from its arguments is what was checked here.
    args = default_argument_parser().parse_intermixed_args(forwarded)
    assert (args.num_processes, args.num_machines, args.resume) == (2, 1, True)
    task_cfg = LazyConfig.apply_overrides(LazyConfig.load(args.config), args.opts)
    apply_grouping_arguments(task_cfg, args)
    here = LazyConfig.apply_overrides(LazyConfig.load(TOY), overrides)
    apply_grouping_arguments(here, default_argument_parser().parse_args(
        ["--config", TOY, "--head-lr-multiplier", "10"]))  # fmt: skip
    assert OmegaConf.to_container(task_cfg) == OmegaConf.to_container(here)
    assert task_cfg.optimizer.params.head_lr_multiplier == 10.0
    assert task_cfg.train.output_dir == out and os.path.isdir(out)


@pytest.mark.parametrize(
    "time, minutes",
    [("90", 90), ("24:00:00", 1440), ("1-00:00:00", 1440), ("1-12", 2160), ("2-01:30", 2970),
     ("0:10:01", 11)],
)  # fmt: skip
def test_time_takes_slurm_formats(submitted, tmp_path, time, minutes):
    job = submitted("--time", time, f"train.output_dir={tmp_path}")
    assert job.parameters["timeout_min"] == minutes
    # No Slurm here: the local executor, which takes --signal-delay-s and --max-requeues.
    assert job.cluster == "local"


REFUSED = {
    "--nodes 0": (["--nodes", "0"], "--nodes 0: must be at least 1"),
    "--nodes -2": (["--nodes", "-2"], "--nodes -2: must be at least 1"),
    "--tasks-per-node 0": (["--tasks-per-node", "0"], "--tasks-per-node 0: must be at least 1"),
    "--gpus-per-node -1": (["--gpus-per-node", "-1"], "--gpus-per-node -1: must be at least 0"),
    "--cpus-per-task 0": (["--cpus-per-task", "0"], "--cpus-per-task 0: must be at least 1"),
    "--mem-gb 0": (["--mem-gb", "0"], "--mem-gb 0.0: must be a positive number"),
    "--max-requeues -1": (["--max-requeues", "-1"], "--max-requeues -1: must be at least 0"),
    "--time 0": (["--time", "0"], "--time 0: must be longer than zero"),
    "--time 24:00": (["--time", "24:00"], "MM:SS is not accepted"),
    "--time 1": (["--time", "1"], "--signal-delay-s 120 is not shorter than --time 1 (60 s)"),
    "--signal-delay-s -1": (["--signal-delay-s", "-1"], "--signal-delay-s -1: must be at least"),
    "gpus and tasks": (["--gpus-per-node", "2", "--tasks-per-node", "1"], "one task per GPU"),
    "--cluster slurm": (["--cluster", "slurm"], "--cluster slurm: Slurm's srun is not found"),
    "local nodes": (["--cluster", "local", "--nodes", "2"], "--cluster local runs one machine"),
    "default cluster": (["--nodes", "2"], "--cluster local runs one machine"),
    "debug tasks": (["--cluster", "debug", "--tasks-per-node", "2"], "runs one task"),
    "multiplier": (["--head-lr-multiplier", "0"], "--head-lr-multiplier must be a positive"),
}


@pytest.mark.parametrize("case", list(REFUSED))
def test_bad_arguments_are_one_line_errors_before_anything_is_submitted_or_moved(
    submitted, tmp_path, capsys, case
):
    """Observed: each of these was submitted (nodes 0, a negative task count, a job signalled to
    stop as it starts, two machines on the local executor, ...), --time took minutes only, and
    --cluster slurm without Slurm was a traceback."""
    flags, message = REFUSED[case]
    out = tmp_path / "used"
    out.mkdir()
    (out / "last_checkpoint").write_text("model_final.pth")
    with pytest.raises(SystemExit) as exit_info:
        submitted(*flags, f"train.output_dir={out}", "train.overwrite=True")
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and message in err, err
    assert sorted(os.listdir(out)) == ["last_checkpoint"]  # train.overwrite moved nothing
