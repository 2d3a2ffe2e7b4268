"""A resume with another effective batch continues at the same sample, or is refused.

Observed: one epoch at batch 32 (64 iterations), then ``--resume train.epochs=2
train.accumulation=2`` logged "Starting training at iteration 65 of 64" and trained nothing;
with ``train.epochs=3`` it trained two epochs and the sampler skipped one: the checkpoint counts
iterations of the old batch and the run read them as iterations of the new one.
"""

import json
import logging

import pytest
import torch

from pgtrain.config import LazyConfig
from pgtrain.engine import build_run
from pgtrain.errors import CheckpointError, ConfigError
from tests._loggers import loggers_restored
from tests._repo_configs import TOY

# The toy train set: 2,048 samples, total batch 32: 64 iterations an epoch.


def toy(out, *overrides):
    base = ["train.eval_period=0", "train.log_period=16", f"train.output_dir={out}"]
    return LazyConfig.apply_overrides(LazyConfig.load(TOY), [*base, *overrides])


def train(out, *overrides, resume=False):
    from tools import train_net

    train_net.do_train(toy(out, *overrides), resume=resume)


def records(out):
    lines = (out / "metrics.json").read_text().splitlines()
    return [json.loads(line) for line in lines if "total_loss" in line]


def one_epoch_at_batch_32(out):
    train(out, "train.max_iter=null", "train.epochs=1", "train.checkpoint.period=32")


def test_a_larger_batch_resumes_at_the_same_sample_and_epoch(tmp_path, caplog):
    one_epoch_at_batch_32(tmp_path)
    with caplog.at_level(logging.INFO, logger="pgtrain"):
        train(
            tmp_path, "train.max_iter=null", "train.epochs=2", "train.accumulation=2", resume=True
        )
    assert (
        "Resuming with effective batch 64 (the checkpoint's: 32): 2,048 samples seen, iteration "
        "64 at batch 32 -> iteration 32 at batch 64" in caplog.text
    )
    assert "Starting training at iteration 33 of 64" in caplog.text
    # One numbering per folder: what the first run counted at batch 32 (its numbered
    # checkpoints, metrics.json, events) is moved intact into batch_32/; the checkpoint resumed
    # from stays, named by its iterations at batch 64; nothing is overwritten or lost.
    stamps = [(r["iteration"], r["epoch"]) for r in records(tmp_path)]
    assert stamps == [(48, 1.5), (64, 2.0)]  # iterations done at batch 64
    before = [(r["iteration"], r["epoch"]) for r in records(tmp_path / "batch_32")]
    assert before == [(16, 0.25), (32, 0.5), (48, 0.75), (64, 1.0)]
    aside = sorted(p.name for p in (tmp_path / "batch_32").glob("model_*"))
    assert aside == ["model_0000032.pth", "model_0000064.pth"]  # the first run's, at batch 32
    assert not (tmp_path / "model_0000032.pth").exists()  # the names at batch 64 are free
    assert (
        not (tmp_path / "model_0000064.pth").exists()
        or torch.load(tmp_path / "model_0000064.pth", weights_only=True)["trainer"]["batch"] == 64
    )
    assert (tmp_path / "last_checkpoint").read_text() == "model_final.pth"
    assert "moved into " + str(tmp_path / "batch_32") in caplog.text
    final = torch.load(tmp_path / "model_final.pth", weights_only=True)
    assert final["trainer"]["iteration"] == 63 and final["trainer"]["samples_seen"] == 2 * 2048
    assert final["trainer"]["batch"] == 64


def test_a_numbered_checkpoint_resumed_at_another_batch_is_renamed_to_its_new_number(
    tmp_path, caplog
):
    one_epoch_at_batch_32(tmp_path)  # then as if stopped right after its last periodic save
    (tmp_path / "model_final.pth").unlink()
    (tmp_path / "last_checkpoint").write_text("model_0000064.pth")
    overrides = ("train.max_iter=null", "train.epochs=2", "train.accumulation=2")
    # The tools that show a run (inspect_param_groups, plot_lr) build it and move nothing.
    run = build_run(toy(tmp_path, *overrides), resume=True, with_loader=True)
    assert run.iterations_done == 32 and not (tmp_path / "batch_32").exists()
    assert (tmp_path / "last_checkpoint").read_text() == "model_0000064.pth"
    with caplog.at_level(logging.INFO, logger="pgtrain"):
        train(tmp_path, *overrides, resume=True)
    assert "model_0000064.pth (now model_0000032.pth) resumed" in caplog.text
    resumed = torch.load(tmp_path / "model_0000032.pth", weights_only=True)["trainer"]
    assert resumed["samples_seen"] == 2048 and resumed["batch"] == 32  # the file, renamed
    aside = {p.name for p in (tmp_path / "batch_32").iterdir()}
    assert {"model_0000032.pth", "metrics.json"} <= aside and "model_0000064.pth" not in aside
    assert (tmp_path / "last_checkpoint").read_text() == "model_final.pth"


def test_the_schedule_continues_at_the_same_fraction_of_the_run(tmp_path):
    # The LR drops at 3/4 of a two-epoch run: after iteration 95 at batch 32, 47 at batch 64.
    schedule = ["lr_scheduler.schedule.milestones=[0.75]", "lr_scheduler.schedule.warmup_length=0"]
    two_epochs = ["train.max_iter=null", "train.epochs=2", *schedule]
    train(tmp_path, *two_epochs, "train.checkpoint.period=64")
    unbroken = {r["iteration"]: r["lr/default"] for r in records(tmp_path)}
    (tmp_path / "last_checkpoint").write_text("model_0000064.pth")  # after one epoch
    train(tmp_path, *two_epochs, "train.accumulation=2", resume=True)
    resumed = {r["iteration"]: r["lr/default"] for r in records(tmp_path) if r["epoch"] > 1}
    # The same samples (3,072 after the step, then the end) train at the same LR.
    assert resumed == {48: unbroken[96], 64: unbroken[128]}
    assert unbroken[96] == pytest.approx(0.005) and unbroken[128] == pytest.approx(0.0005)


class _Indices(torch.utils.data.Dataset):
    def __len__(self):
        return 40

    def __getitem__(self, index):
        return {"index": index}


def test_the_data_continues_at_the_next_sample():
    from pgtrain.data import build_train_loader
    from pgtrain.engine import Trainer

    unbroken = iter(build_train_loader(_Indices(), total_batch_size=8))
    stream = [int(i) for _ in range(12) for i in next(unbroken)["index"]]
    # 10 iterations at batch 8 = 80 samples = iteration 5 at batch 16 (two micro-batches of 8).
    param = torch.zeros(1, requires_grad=True)
    loader = build_train_loader(_Indices(), total_batch_size=8)
    trainer = Trainer(torch.nn.Linear(1, 1), loader, torch.optim.SGD([param]), accumulation=2)
    trainer.start_iter = 5
    resumed = trainer._start_data()
    assert [int(i) for _ in range(2) for i in next(resumed)["index"]] == stream[80:96]


@pytest.mark.parametrize(
    "overrides, error, match",
    [
        # 2,048 samples are not a whole number of batches of 96: no iteration is exact.
        (
            ["train.max_iter=null", "train.epochs=2", "dataloader.train.total_batch_size=96"],
            CheckpointError,
            r"has seen 2,048 samples .* not a whole number of batches of 96",
        ),
        # A length in iterations of batch 32 means other data at batch 64.
        (
            ["train.max_iter=200", "train.accumulation=2"],
            ConfigError,
            r"train.max_iter=200 counts optimizer steps.*train.epochs",
        ),
    ],
)
def test_an_inexact_conversion_is_refused_and_nothing_is_lost(tmp_path, overrides, error, match):
    one_epoch_at_batch_32(tmp_path)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()}
    with pytest.raises(error, match=match):
        train(tmp_path, *overrides, resume=True)
    after = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()}
    assert {k: v for k, v in after.items() if k != "log.txt"} == {
        k: v for k, v in before.items() if k != "log.txt"
    }


def test_the_command_line_exits_2_with_one_line(tmp_path, capsys):
    from tools import train_net

    one_epoch_at_batch_32(tmp_path)
    # cli sets up logging on this test's streams: put the loggers back afterwards.
    with loggers_restored(), pytest.raises(SystemExit) as exit_info:
        train_net.cli(
            [
                "--config",
                TOY,
                "--resume",
                f"train.output_dir={tmp_path}",
                "train.eval_period=0",
                "train.accumulation=2",
            ]
        )
    assert exit_info.value.code == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(err) == 1 and "train.max_iter=300 counts optimizer steps" in err[0]


def _strip_position(path):
    data = torch.load(path, weights_only=True)
    del data["trainer"]["samples_seen"], data["trainer"]["batch"]
    torch.save(data, path)


def test_an_older_checkpoint_resumes_as_before_when_the_batch_is_unknown(tmp_path, caplog):
    one_epoch_at_batch_32(tmp_path)
    _strip_position(tmp_path / "model_0000032.pth")
    (tmp_path / "last_checkpoint").write_text("model_0000032.pth")
    with caplog.at_level(logging.INFO, logger="pgtrain"):
        train(tmp_path, "train.max_iter=null", "train.epochs=1", resume=True)
    assert "Starting training at iteration 33 of 64" in caplog.text


def test_an_older_checkpoint_is_refused_when_it_shows_another_batch(tmp_path):
    dynamic = ["train.lr_scaling.reference_batch=32", "train.lr_scaling.dynamic=True"]
    train(tmp_path, "train.max_iter=null", "train.epochs=1", "train.checkpoint.period=32", *dynamic)
    _strip_position(tmp_path / "model_0000032.pth")
    (tmp_path / "last_checkpoint").write_text("model_0000032.pth")
    with pytest.raises(CheckpointError, match=r"does not record the samples it has seen.*32"):
        train(
            tmp_path,
            "train.max_iter=null",
            "train.epochs=1",
            "train.accumulation=2",
            *dynamic,
            resume=True,
        )


def test_dynamic_lr_scaling_uses_the_new_batch_from_the_first_resumed_step(tmp_path):
    dynamic = ["train.lr_scaling.reference_batch=32", "train.lr_scaling.dynamic=True"]
    train(tmp_path, "train.max_iter=null", "train.epochs=1", *dynamic)
    resumed = ["train.epochs=2", "train.accumulation=2", "train.log_period=1"]
    train(tmp_path, "train.max_iter=null", *resumed, *dynamic, resume=True)
    lrs = {r["iteration"]: r["lr/default"] for r in records(tmp_path)}
    # Linear scaling: batch 64 is twice the reference, from the first resumed iteration (the
    # 33rd) on, not one step late.
    assert lrs[33] == pytest.approx(0.01) and lrs[34] == pytest.approx(0.01)
