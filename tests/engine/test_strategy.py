"""The run's strategy: one object decided from ``train``, asked by everything that differs."""

from datetime import timedelta

import pytest
import torch
from torch import nn

from pgtrain.engine import Strategy, Trainer, build_run
from pgtrain.errors import ConfigError
from tests._repo_configs import toy_run


@pytest.mark.parametrize(
    ("train", "message"),
    [
        ({"strategy": "fsdb"}, "train.strategy='fsdb' is not a strategy; did you mean 'fsdp'?"),
        ({"strategy": "fsdp", "checkpoint": {"format": "file"}}, "cannot save an FSDP run"),
        ({"checkpoint": {"format": "shard"}}, "train.checkpoint.format='shard' is not a format"),
        ({"dist_timeout_s": 0}, "train.dist_timeout_s=0 must be a positive number of seconds"),
    ],
)
def test_a_strategy_that_does_not_fit_is_one_line_naming_the_key(train, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace("?", r"\?")):
        Strategy.from_train(train)


def test_the_checkpoint_format_and_timeouts_follow_the_settings():
    fsdp = Strategy.from_train({"strategy": "fsdp", "dist_timeout_s": 90})
    assert fsdp.sharded_checkpoints and not Strategy.from_train({}).sharded_checkpoints
    assert Strategy.from_train({"checkpoint": {"format": "sharded"}}).sharded_checkpoints
    assert fsdp.timeout("nccl") == timedelta(seconds=90)
    assert fsdp.stall_timeout() == 45  # half the collective timeout, at most 60 s
    assert Strategy.from_train({}).timeout("gloo") > timedelta(seconds=60)  # the launcher's
    assert Strategy.backend(0) == "gloo" and Strategy.backend(2) == "nccl"


def test_one_process_wraps_nothing_and_syncs_every_backward():
    strategy, model = Strategy.from_train({"strategy": "fsdp"}), nn.Linear(2, 2)
    assert strategy.wrap(model) is model  # no process group: FSDP does not shard
    assert not strategy.sharded and not strategy.lockstep_eval
    with strategy.no_sync(model):  # a no-op context in one process
        model(torch.ones(1, 2)).sum().backward()
    assert model.weight.grad is not None
    assert Strategy.full_value(torch.tensor(2.5)) == 2.5


def test_the_run_carries_its_strategy_to_the_trainer(tmp_path):
    run = build_run(toy_run(tmp_path, "train.strategy=ddp"), with_loader=True, parallel=True)
    assert run.strategy.name == "ddp" and run.train_model is run.model  # one process
    trainer = Trainer(run.train_model, run.loader, run.optimizer, strategy=run.strategy)
    assert trainer.strategy is run.strategy
    assert Trainer(run.train_model, run.loader, run.optimizer).strategy.name == "ddp"


@pytest.mark.slow
def test_accumulation_reduces_once_per_step_under_ddp_compiled_or_not(tmp_path):
    import json

    from pgtrain.engine import launch
    from tests.engine import _launch_targets

    launch(_launch_targets.count_gradient_allreduces, 2, args=(str(tmp_path),), backend="gloo")
    counts = json.loads((tmp_path / "allreduces.json").read_text())
    assert counts == {"plain": 2, "compiled": 2}  # 2 steps: one all-reduce each, not 4
