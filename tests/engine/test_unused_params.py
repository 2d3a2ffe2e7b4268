"""Trainable parameters that never get a gradient are named once, or stop the run."""

import logging

import pytest
import torch
from torch import nn

from pgtrain.data import build_train_loader
from pgtrain.engine import Trainer, UnusedParameterCheck
from pgtrain.errors import ConfigError
from pgtrain.param_groups import build_param_groups


def trainer_with_dead_branch(toy_model, toy_dataset, mode):
    toy_model.unused = nn.Linear(3, 3)  # registered, in a group, never in the forward pass
    groups = build_param_groups(toy_model, builder="rules", lr=0.1)
    loader = build_train_loader(toy_dataset, total_batch_size=8, seed=0)
    trainer = Trainer(toy_model, loader, torch.optim.SGD(groups, lr=0.1))
    trainer.register_hooks([UnusedParameterCheck(mode)])
    return trainer


def test_warns_once_naming_the_parameters(toy_model, toy_dataset, caplog):
    trainer = trainer_with_dead_branch(toy_model, toy_dataset, "warn")
    with caplog.at_level(logging.WARNING, logger="pgtrain.engine.hooks.basic"):
        trainer.train(0, 3)
    warnings = [r.getMessage() for r in caplog.records if "got no gradient" in r.getMessage()]
    assert len(warnings) == 1
    assert warnings[0].startswith(
        "2 trainable parameter(s) got no gradient in iteration 1: 'unused.weight', 'unused.bias'"
    )
    assert "train.unused_params=error" in warnings[0]


def test_error_mode_stops_before_the_first_step(toy_model, toy_dataset):
    trainer = trainer_with_dead_branch(toy_model, toy_dataset, "error")
    before = toy_model.head.weight.detach().clone()
    with pytest.raises(ConfigError, match=r"'unused.weight', 'unused.bias'.*unused_params=error"):
        trainer.train(0, 3)
    assert torch.equal(toy_model.head.weight, before)


def test_a_model_whose_every_parameter_trains_is_quiet(toy_model, toy_dataset, caplog):
    loader = build_train_loader(toy_dataset, total_batch_size=8, seed=0)
    trainer = Trainer(toy_model, loader, torch.optim.SGD(toy_model.parameters(), lr=0.1))
    trainer.register_hooks([UnusedParameterCheck("warn")])
    with caplog.at_level(logging.WARNING):
        trainer.train(0, 2)
    assert not [r for r in caplog.records if "got no gradient" in r.getMessage()]


def test_unknown_mode_names_the_key():
    with pytest.raises(ConfigError, match="train.unused_params='warning' must be one of"):
        UnusedParameterCheck("warning")
