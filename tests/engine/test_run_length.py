"""A run's length in epochs, and a resume that trains longer.

Observed: there was no epoch length anywhere (the user worked out train.max_iter from a dataset
size the log never printed; unit="epoch" schedules needed iters_per_epoch added by hand), and a
resume with a larger train.max_iter moved the fraction-based milestones: the LR jumped from 5e-4
back to 5e-3 at the resume, and nothing in the log said so.
"""

import json
import logging

import pytest

from pgtrain.config import LazyConfig
from pgtrain.engine import build_run, check_run_config
from pgtrain.engine.run.length import RunLength
from pgtrain.errors import ConfigError
from pgtrain.utils import comm
from tests._repo_configs import TOY

# The toy train set: 2,048 samples; total batch 32.


def toy(*overrides):
    return LazyConfig.apply_overrides(LazyConfig.load(TOY), list(overrides))


def epochs_run(*overrides, caplog=None):
    cfg = toy("train.max_iter=null", "train.epochs=3", *overrides)
    check_run_config(cfg)
    return build_run(cfg)


def test_epochs_become_iterations_from_the_dataset_length(caplog):
    with caplog.at_level(logging.INFO, logger="pgtrain"):
        run = epochs_run()
    assert (run.length.samples, run.length.batch, run.length.iters_per_epoch) == (2048, 32, 64)
    assert run.cfg.train.max_iter == 3 * 64 and run.scheduler.max_iter == 3 * 64
    assert "2,048 samples / batch 32 = 64 iterations per epoch; 3 epochs = 192 iterations" in (
        caplog.text
    )


def test_accumulation_makes_an_epoch_fewer_optimizer_steps():
    run = epochs_run("train.accumulation=4")
    assert (run.length.batch, run.length.iters_per_epoch, run.cfg.train.max_iter) == (128, 16, 48)


def test_several_processes_share_an_epoch(monkeypatch):
    # Two processes with the same total batch: each loads 16, the optimizer step still sees 32.
    monkeypatch.setattr(comm, "get_world_size", lambda: 2)
    run = epochs_run()
    assert run.loader.batch_sampler.batch_size == 16
    assert (run.length.batch, run.length.iters_per_epoch) == (32, 64)
    monkeypatch.setattr(comm, "get_world_size", lambda: 4)
    run = epochs_run("dataloader.train.total_batch_size=64", "train.accumulation=2")
    assert (run.length.batch, run.length.iters_per_epoch) == (128, 16)  # ceil(2048 / 128)


def test_a_partial_last_batch_still_counts_an_iteration():
    length = RunLength.of(toy("train.max_iter=null", "train.epochs=2").train, _Sized(600), 64)
    assert length.iters_per_epoch == 10 and length.max_iter == 20  # ceil(600 / 64) = 10


class _Sized:
    def __init__(self, n):
        self.dataset = list(range(n))


def test_periods_and_schedules_in_epochs_take_the_same_length():
    run = epochs_run(
        "train.eval_period=1ep",
        "train.checkpoint.period=2ep",
        "lr_scheduler.schedule.unit=epoch",
        "lr_scheduler.schedule.milestones=[2]",
        "lr_scheduler.schedule.warmup_length=0",
    )
    assert (run.cfg.train.eval_period, run.cfg.train.checkpoint.period) == (64, 128)
    lrs = [run.scheduler.lrs_at(i)[0] for i in (127, 128)]
    assert lrs[0] == pytest.approx(0.005) and lrs[1] == pytest.approx(0.0005)  # at epoch 2


def test_an_epoch_unit_schedule_alone_builds_the_loader_for_its_length():
    run = build_run(
        toy(
            "lr_scheduler.schedule.unit=epoch",
            "lr_scheduler.schedule.milestones=[1]",
            "lr_scheduler.schedule.warmup_length=0",
        )
    )
    assert run.length.iters_per_epoch == 64 and run.cfg.train.max_iter == 300
    assert run.scheduler.lrs_at(64)[0] == pytest.approx(0.0005)


@pytest.mark.parametrize(
    "overrides, match",
    [
        (["train.epochs=3"], r"train.max_iter=300 and train.epochs=3 are both set.*max_iter=null"),
        (["train.max_iter=null"], "set train.max_iter .* or train.epochs"),
        (["train.max_iter=null", "train.epochs=0"], "train.epochs: 0 must be a number > 0"),
        (["train.eval_period=2epochz"], "train.eval_period: .2epochz. must be a whole number"),
    ],
)
def test_the_length_is_set_once_and_clearly(overrides, match):
    with pytest.raises(ConfigError, match=match):
        check_run_config(toy(*overrides))


def test_metrics_record_the_epoch_next_to_the_iteration(tmp_path):
    from tools import train_net

    cfg = toy(
        "train.max_iter=null",
        "train.epochs=1",
        "train.eval_period=0",
        "train.log_period=16",
        f"train.output_dir={tmp_path}",
    )
    train_net.do_train(cfg, resume=False)
    lines = [json.loads(line) for line in (tmp_path / "metrics.json").read_text().splitlines()]
    stamps = [(r["iteration"], r["epoch"]) for r in lines if "total_loss" in r]
    assert stamps == [(16, 0.25), (32, 0.5), (48, 0.75), (64, 1.0)]  # iterations done


def test_training_longer_on_resume_logs_the_lengths_and_the_lr_jump(tmp_path, caplog):
    from tools import train_net

    base = ["train.eval_period=0", "train.checkpoint.period=50", f"train.output_dir={tmp_path}"]
    train_net.do_train(toy("train.max_iter=100", *base), resume=False)
    with caplog.at_level(logging.WARNING, logger="pgtrain"):
        train_net.do_train(toy("train.max_iter=200", *base), resume=True)
    # Fractions move: after 100 iterations the checkpoint's schedule was past both milestones
    # (0.67, 0.89 of 100: x0.01) while this run is before them (x1).
    assert (
        "Resumed after 100 iterations with max_iter 200; the checkpoint's run had 100 "
        "iterations. Schedule positions given as fractions of the length (unit='fraction') move "
        "with it (the next iteration's schedule multiplier, the checkpoint's -> this run's: "
        "x0.01 -> x1)"
    ) in caplog.text


def test_milestones_in_iterations_stay_where_they_were_on_a_longer_resume(tmp_path, caplog):
    from tools import train_net

    base = [
        "train.eval_period=0",
        "train.checkpoint.period=50",
        f"train.output_dir={tmp_path}",
        "lr_scheduler.schedule.unit=iter",
        "lr_scheduler.schedule.milestones=[60]",
        "lr_scheduler.schedule.warmup_length=0",
    ]
    train_net.do_train(toy("train.max_iter=100", *base), resume=False)
    with caplog.at_level(logging.INFO, logger="pgtrain"):
        train_net.do_train(toy("train.max_iter=200", *base), resume=True)
    # Positions in iterations stay: one info line, no warning telling to use unit=iter.
    assert "The schedule's positions are given in iterations, so they stay" in caplog.text
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING and "Resumed" in r.msg]
    lrs = [json.loads(line) for line in (tmp_path / "metrics.json").read_text().splitlines()]
    after = [r["lr/default"] for r in lrs if r["iteration"] > 100 and "lr/default" in r]
    assert after and all(lr == pytest.approx(0.0005) for lr in after)


def test_two_real_processes_count_the_same_epoch_as_one(tmp_path, monkeypatch):
    from pgtrain.engine import launch
    from tests.engine._train_targets import epoch_length_of_toy

    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(var, raising=False)
    overrides = ["train.max_iter=null", "train.epochs=2", "train.accumulation=2"]
    launch(epoch_length_of_toy, 2, args=(str(tmp_path / "two.json"), overrides), backend="gloo")
    two = json.loads((tmp_path / "two.json").read_text())
    # 32 in total per micro-step (16 on each process) x 2 accumulation: 64 per optimizer step.
    assert two == {"per_process": 16, "batch": 64, "iters_per_epoch": 32, "max_iter": 64}
