"""Resume equals the unbroken run bit for bit where it could fail: dropout in the model and random
augmentation in the data on every rank, two micro-batches a step, a dataset length (37) that
leaves an uneven remainder at each epoch boundary, dict and ``(x, y)`` tuple batches; one and two
processes. Weights and the optimizer's state (momentum) are compared with ``torch.equal``.

Observed: a two-process resume restored only rank 0's random states (the file held rank 0's
alone), so rank 1's dropout masks and augmentations restarted from its seed and the weights
differed from the unbroken run's.
"""

import json
import os

import pytest
import torch

from pgtrain.utils import comm
from tests._loggers import loggers_restored
from tests.engine._exact_resume_targets import (
    exact_resume_config,
    train_unbroken_and_resumed,
    train_variants,
)


def final(out):
    return torch.load(os.path.join(out, "model_final.pth"), weights_only=True)


def assert_same(a, b, where=""):
    """Equal nested states: tensors bit for bit, everything else by value."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for key in a:
            assert_same(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, list | tuple):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_same(x, y, f"{where}.{i}")
    else:
        assert a == b, where


def assert_resume_is_exact(out):
    unbroken, resumed = final(os.path.join(out, "unbroken")), final(os.path.join(out, "resumed"))
    assert_same(unbroken["model"], resumed["model"], "model")
    assert_same(unbroken["trainer"]["optimizer"], resumed["trainer"]["optimizer"], "optimizer")
    assert unbroken["trainer"]["iteration"] == resumed["trainer"]["iteration"] == 11
    assert unbroken["trainer"]["samples_seen"] == 12 * 8  # 2 per process x 2 x 2 micro-batches
    # The resumed run trained iterations 6..12 (as the console counts), not a step more or less.
    with open(os.path.join(out, "resumed", "metrics.json")) as f:
        records = [json.loads(line) for line in f if "total_loss" in line]
    assert [r["iteration"] for r in records] == [8, 12]


@pytest.mark.parametrize("as_tuple", [False, True], ids=["dict", "tuple"])
def test_one_process_resume_is_bit_identical(tmp_path, as_tuple):
    with loggers_restored():  # train_net.main sets up logging on this test's streams
        train_unbroken_and_resumed(str(tmp_path), as_tuple)
    assert_resume_is_exact(str(tmp_path))


@pytest.mark.slow
def test_two_process_resume_is_bit_identical(tmp_path, monkeypatch):
    from pgtrain.engine import launch

    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(var, raising=False)
    launch(train_variants, 2, args=(str(tmp_path),), backend="gloo")
    for batches in ("dict", "tuple"):
        assert_resume_is_exact(str(tmp_path / batches))
        # Every rank's random states are in the file, so rank 1 continues its own streams.
        rng = final(tmp_path / batches / "resumed")["rng"]
        assert len(rng["per_rank"]) == 2
        assert not torch.equal(rng["per_rank"][0]["torch"], rng["per_rank"][1]["torch"])


def test_a_tuple_batch_counts_its_samples_not_its_fields(tmp_path, monkeypatch):
    # Dynamic batch-size LR scaling reads the samples of each step: a (features, label) batch of
    # 2 samples per micro-batch is 4 per step, not 2 (its two fields) x 2.
    from pgtrain.engine import Trainer, build_run

    run = build_run(exact_resume_config(str(tmp_path), as_tuple=True), with_loader=True)
    trainer = Trainer(run.model, run.loader, run.optimizer, accumulation=2)
    trainer.train(0, 1)
    assert trainer.last_batch_size == 8 and comm.get_world_size() == 1
