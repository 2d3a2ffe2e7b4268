"""tools/submit.py with submitit's local executor: two CPU tasks (gloo) are the ranks of one run,
and SIGUSR2 (what Slurm sends a submitit job before its time limit) makes the job save, requeue
itself and resume in the same folder, ending exactly as an unbroken `--num-processes 2` run."""

import json
import os
import signal
import time

import pytest
import torch

from tools import submit, train_net

pytestmark = pytest.mark.slow

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ITERS = 600


def toy(out):
    return [
        "--config",
        "configs/quick/toy.py",
        f"train.output_dir={out}",
        f"train.max_iter={ITERS}",
        "train.checkpoint.period=100000",  # only the requeue's save and the final one
        "train.eval_period=0",
        "train.log_period=10",
    ]


def last_iteration(out):
    path = os.path.join(out, "metrics.json")
    if not os.path.exists(path):
        return -1
    with open(path) as f:
        seen = [json.loads(line)["iteration"] for line in f if line.strip()]
    return max(seen, default=-1)


def tasks_of(job):
    """The job's task processes: the children of submitit's local controller."""
    pid = job._process.pid
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        return [int(p) for p in f.read().split()]


def wait_until(condition, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    pytest.fail(f"timed out waiting for {what}")


def test_a_submitted_job_requeues_on_usr2_and_ends_as_an_unbroken_run(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    out = str(tmp_path / "submitted")
    job = submit.cli(["--cluster", "local", "--tasks-per-node", "2", "--time", "10", *toy(out)])
    try:
        wait_until(lambda: last_iteration(out) >= 100, 120, "training to reach iteration 100")
        tasks = tasks_of(job)
        assert len(tasks) == 2
        for pid in tasks:  # as Slurm's --signal=USR2@<delay> does: every task of the job
            os.kill(pid, signal.SIGUSR2)
        wait_until(job.done, 180, "the requeued job to finish")
        assert job.state == "FINISHED", job.stderr()
    finally:
        if not job.done():
            job.cancel()
    log = (tmp_path / "submitted" / "log.txt").read_text()
    stopped = int(log.split("Stopping after iteration ")[1].split()[0])  # iterations done
    assert 100 < stopped < ITERS
    assert f"Starting training at iteration {stopped + 1} of {ITERS}" in log  # resumed there
    assert (
        "Rank 0 of 2" in log
        and "Rank 1 of 2" in (tmp_path / "submitted" / "log.txt.rank1").read_text()
    )
    assert "Requeued job" in job.stderr() or "Requeued job" in (job.stdout() or "")
    # The same run with --num-processes 2, unbroken.
    plain = str(tmp_path / "plain")
    train_net.cli(["--num-processes", "2", *toy(plain)])
    a = torch.load(os.path.join(out, "model_final.pth"), weights_only=True)["model"]
    b = torch.load(os.path.join(plain, "model_final.pth"), weights_only=True)["model"]
    for key, value in b.items():
        assert torch.equal(a[key], value), key


def test_a_new_run_in_a_used_folder_is_refused_before_submitting(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(ROOT)
    out = tmp_path / "used"
    out.mkdir()
    (out / "last_checkpoint").write_text("model_final.pth")
    with pytest.raises(SystemExit) as exit_info:
        submit.cli(["--cluster", "local", *toy(out)])
    assert exit_info.value.code == 2
    assert "already holds a run" in capsys.readouterr().err
    assert not (out / "submitit").exists()
