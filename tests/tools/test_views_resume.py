"""What a run shows at a --resume: one iteration numbering (iterations done) everywhere, the table
at the first iteration that will run, what changed against the checkpoint, and a schedule-length
warning only where it applies, in the units the run uses."""

import json
import os
import re

import pytest
import torch

from tests._cli_batch import run_batch

TOY = "configs/quick/toy.py"
COMMON = ["train.eval_period=0", "train.log_period=5", "train.checkpoint.period=10"]
ITER_UNITS = [
    "lr_scheduler.schedule.unit=iter",
    "lr_scheduler.schedule.milestones=[27,36]",
    "lr_scheduler.schedule.warmup_length=2",
]


def train(out, *args):
    return ["--config", TOY, f"train.output_dir={out}", *COMMON, *args]


def make_old(folder):
    """Turns a finished 10-iteration run into what the old numbering wrote: model_0000009.pth,
    metrics.json counting from 0, no `iterations_done` in the trainer state."""
    data = torch.load(folder / "model_0000010.pth", weights_only=True)
    data["trainer"].pop("iterations_done", None)
    data.pop("iterations_done", None)
    torch.save(data, folder / "model_0000009.pth")
    os.remove(folder / "model_0000010.pth")
    (folder / "last_checkpoint").write_text("model_0000009.pth")
    lines = [json.loads(ln) for ln in (folder / "metrics.json").read_text().splitlines()]
    old = [{**r, "iteration": r["iteration"] - 1} for r in lines]
    (folder / "metrics.json").write_text("".join(json.dumps(r) + "\n" for r in old))


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("views_resume")
    a, b, c, d, e, f = (tmp / x for x in "abcdef")
    (tmp / "first").mkdir()
    (tmp / "second").mkdir()
    first = run_batch(
        "tools/train_net.py",
        [
            train(a, "train.max_iter=20"),
            train(b, "train.max_iter=10"),
            train(c, "train.max_iter=10", *ITER_UNITS),
            train(d, "train.max_iter=10"),
            train(e, "train.max_iter=10"),
            train(f, "train.max_iter=10"),
        ],
        tmp / "first",
    )
    for proc in first:
        assert proc.returncode == 0, proc.stderr[-3000:]
    make_old(d)
    second = run_batch(
        "tools/train_net.py",
        [
            train(a, "train.max_iter=20", "--resume"),
            train(b, "train.max_iter=40", "optimizer.lr=0.01", "--resume"),
            train(c, "train.max_iter=40", *ITER_UNITS, "--resume"),
            train(d, "train.max_iter=20", "--resume"),
            train(e, "train.max_iter=20", "train.lr_scaling.reference_batch=16", "--resume"),
            train(f, "train.max_iter=20", "--resume",
                  "optimizer.params.rules=[{match: head.*, lr_mult: 10, group: classifier}]"),
        ],
        tmp / "second",
    )  # fmt: skip
    return {"dirs": (a, b, c, d, e, f), "first": first, "second": second}


def log_of(proc):
    return proc.stdout + proc.stderr


def iterations(folder):
    lines = (folder / "metrics.json").read_text().splitlines()
    return [json.loads(ln)["iteration"] for ln in lines]


@pytest.mark.slow
def test_checkpoints_metrics_and_console_count_iterations_done(runs):
    a = runs["dirs"][0]
    assert {"model_0000010.pth", "model_0000020.pth", "model_final.pth"} <= set(os.listdir(a))
    assert iterations(a) == [5, 10, 15, 20]
    log = log_of(runs["first"][0])
    assert "iter 5/20" in log and "iter 20/20" in log
    assert "Saved checkpoint " + str(a / "model_0000010.pth") in log
    assert "lr at iter 1 " in log  # the table: the LR of the first iteration


@pytest.mark.slow
def test_resuming_a_finished_run_says_so_and_trains_nothing(runs):
    proc = runs["second"][0]
    assert proc.returncode == 0, proc.stderr[-3000:]
    log = log_of(proc)
    assert "iter 21/20" not in log and "Starting training" not in log
    finished = [ln for ln in log.splitlines() if "already finished" in ln]
    assert len(finished) == 1 and "(at 20/20)" in finished[0]
    assert iterations(runs["dirs"][0]) == [5, 10, 15, 20]


@pytest.mark.slow
def test_the_resume_table_shows_the_first_iteration_that_runs_and_what_changed(runs):
    log = log_of(runs["second"][1])
    assert "Starting training at iteration 11 of 40" in log
    table = log[log.index("param groups (") :]
    header = next(ln for ln in table.splitlines() if ln.startswith("group"))
    assert "lr at iter 11" in header
    columns = [c for c in re.split(r"\s{2,}", header.strip())]
    default = next(ln for ln in table.splitlines() if ln.startswith("default "))
    values = re.split(r"\s{2,}", default.strip())
    assert values[columns.index("lr at iter 11")] == "0.01"  # past the warmup: this run's LR
    changed = [ln for ln in table.splitlines() if ln.startswith("changed against the checkpoint")]
    assert any("base lr 0.005 -> 0.01" in ln for ln in changed), table
    assert any("'head': lr 0.05 -> 0.1" in ln for ln in changed), table
    warning = next(ln for ln in log.splitlines() if "max_iter 40" in ln)
    assert "0.005 -> 0.01" not in warning and "iterations" in warning
    assert "unit='fraction'" in warning


@pytest.mark.slow
def test_a_changed_batch_size_lr_factor_or_a_renamed_group_is_never_unchanged(runs):
    scaled, renamed = (log_of(p) for p in runs["second"][4:6])
    assert "unchanged against the checkpoint" not in scaled
    assert (
        "changed against the checkpoint: batch-size LR factor 1 -> 2 (every group's LR x2; "
        "train.lr_scaling)" in scaled
    )
    assert "changed against the checkpoint: new group 'classifier' (2 tensors)" in renamed
    assert (
        "changed against the checkpoint: 2 parameters in another group: head.weight ('head' -> "
        "'classifier'), head.bias ('head' -> 'classifier')" in renamed
    )


@pytest.mark.slow
def test_no_schedule_length_warning_when_positions_are_in_iterations(runs):
    log = log_of(runs["second"][2])
    assert "Starting training at iteration 11 of 40" in log
    assert "unit='iter')" not in log and "WARNING" not in log
    # same groups, LRs and weight decay
    assert not [ln for ln in log.splitlines() if ln.startswith("changed against the checkpoint")]
    assert "unchanged against the checkpoint" in log


@pytest.mark.slow
def test_a_checkpoint_of_the_old_numbering_resumes_where_it_left_off(runs):
    d, proc = runs["dirs"][3], runs["second"][3]
    assert proc.returncode == 0, proc.stderr[-3000:]
    log = log_of(proc)
    assert "Starting training at iteration 11 of 20" in log and "iter 15/20" in log
    assert iterations(d) == [5, 10, 15, 20]  # the old lines renumbered, the new ones appended
    assert "model_0000020.pth" in os.listdir(d)
