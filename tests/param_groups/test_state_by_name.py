"""Name-keyed optimizer state: resume after regrouping (seed 001) with SGD and AdamW."""

import io
import logging

import pytest
import torch
from torch import nn

from pgtrain.errors import CheckpointError
from pgtrain.param_groups import (
    build_param_groups,
    load_optimizer_state_by_name,
    optimizer_state_by_name,
    optimizer_state_from_torch,
)

OPTIMIZERS = {
    "sgd": lambda groups: torch.optim.SGD(groups, lr=0.01, momentum=0.9, weight_decay=1e-4),
    "adamw": lambda groups: torch.optim.AdamW(groups, lr=0.01, weight_decay=1e-4),
}


def train(model: nn.Module, optimizer: torch.optim.Optimizer, steps: range) -> None:
    """Steps with made-up gradients that depend only on the step and the parameter's name."""
    for step in steps:
        for i, (_, p) in enumerate(model.named_parameters()):
            gen = torch.Generator().manual_seed(1000 * step + i)
            p.grad = torch.randn(p.shape, generator=gen)
        optimizer.step()


def checkpoint_round_trip(obj):
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


def one_group(model):
    return build_param_groups(model, builder="rules", lr=0.01, weight_decay=1e-4)


def head_groups(model):
    return build_param_groups(
        model, builder="head_multiplier", lr=0.01, weight_decay=1e-4, head_lr_multiplier=10
    )


@pytest.mark.parametrize("kind", sorted(OPTIMIZERS))
def test_seed001_resume_with_head_multiplier_keeps_every_state_bit_exact(kind, make_detector):
    old_model = make_detector()
    old = OPTIMIZERS[kind](one_group(old_model))
    train(old_model, old, range(3))
    saved = checkpoint_round_trip(
        {"model": old_model.state_dict(), "optimizer": optimizer_state_by_name(old)}
    )

    new_model = make_detector()
    new_model.load_state_dict(saved["model"])
    new = OPTIMIZERS[kind](head_groups(new_model))
    report = load_optimizer_state_by_name(new, saved["optimizer"])

    old_params = dict(old_model.named_parameters())
    for name, p in new_model.named_parameters():
        old_state = old.state[old_params[name]]
        assert set(new.state[p]) == set(old_state) and old_state, name
        for key, value in old_state.items():
            assert torch.equal(new.state[p][key], value), (name, key)
            assert new.state[p][key].dtype == value.dtype
    # hyperparameters come from the current config
    assert [(g["name"], g["lr"]) for g in new.param_groups] == [
        ("backbone", 0.01),
        ("other", pytest.approx(0.05)),
        ("box_head", pytest.approx(0.1)),
        ("mask_head", pytest.approx(0.1)),
    ]
    assert len(report.restored) == 10 and not report.added and not report.dropped
    assert ("roi_heads.box_predictor.weight", "default", "box_head") in report.moved
    assert "moved 'default' -> 'mask_head': roi_heads.mask_predictor.weight, " in report.summary()


@pytest.mark.parametrize("kind", sorted(OPTIMIZERS))
def test_regrouped_resume_continues_exactly_like_an_unbroken_run(kind, make_detector):
    unbroken_model = make_detector()
    unbroken = OPTIMIZERS[kind](one_group(unbroken_model))
    train(unbroken_model, unbroken, range(2))
    saved = checkpoint_round_trip(
        {"model": unbroken_model.state_dict(), "optimizer": optimizer_state_by_name(unbroken)}
    )
    train(unbroken_model, unbroken, range(2, 4))

    model = make_detector()
    model.load_state_dict(saved["model"])
    # Same hyperparameters, different grouping and group order: only the mapping can differ.
    groups = build_param_groups(
        model, lr=0.01, weight_decay=1e-4, rules=[{"match": "backbone.*", "group": "b"}]
    )
    resumed = OPTIMIZERS[kind](list(reversed(groups)))
    load_optimizer_state_by_name(resumed, saved["optimizer"])
    train(model, resumed, range(2, 4))
    for (name, a), b in zip(unbroken_model.named_parameters(), model.parameters(), strict=True):
        assert torch.equal(a, b), name


def test_changed_shape_is_dropped_with_a_warning_and_changes_are_reported(make_detector, caplog):
    old_model = make_detector()
    old = OPTIMIZERS["sgd"](one_group(old_model))
    train(old_model, old, range(1))
    saved = checkpoint_round_trip(optimizer_state_by_name(old))

    new_model = make_detector()
    new_model.roi_heads.box_predictor = nn.Linear(8, 4)  # another number of classes
    del new_model.roi_heads.mask_predictor
    new_model.roi_heads.extra = nn.Linear(8, 2, bias=False)
    new = OPTIMIZERS["sgd"](one_group(new_model))
    with caplog.at_level(logging.INFO, logger="pgtrain.param_groups.state"):
        report = load_optimizer_state_by_name(new, saved)
    assert report.mismatched == [
        ("roi_heads.box_predictor.weight", (3, 8), (4, 8)),
        ("roi_heads.box_predictor.bias", (3,), (4,)),
    ]
    assert report.added == ["roi_heads.extra.weight"]
    assert report.dropped == ["roi_heads.mask_predictor.weight", "roi_heads.mask_predictor.bias"]
    assert not report.moved and len(report.restored) == 6
    assert new.state.get(new_model.roi_heads.box_predictor.weight) in (None, {})
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings[0] == (
        "optimizer state of 'roi_heads.box_predictor.weight' dropped: saved for shape (3, 8), "
        "now (4, 8)"
    )
    assert any(
        "restored 6, moved 0, added 1, dropped 2, shape changed 2" in r.getMessage()
        for r in caplog.records
    )


def test_old_torch_checkpoint_converts_by_position(make_detector):
    """Seed 001: a checkpoint of SGD(model.parameters()) (no names) resumed with new groups."""
    old_model = make_detector()
    old = torch.optim.SGD(old_model.parameters(), lr=0.01, momentum=0.9)
    train(old_model, old, range(2))
    torch_state = checkpoint_round_trip(old.state_dict())
    names = [n for n, _ in old_model.named_parameters()]
    converted = optimizer_state_from_torch(torch_state, names)

    new_model = make_detector()
    new = OPTIMIZERS["sgd"](head_groups(new_model))
    report = load_optimizer_state_by_name(new, converted)
    assert len(report.restored) == 10 and {old for _, old, _ in report.moved} == {"group0"}
    old_params = dict(old_model.named_parameters())
    for name, p in new_model.named_parameters():
        assert torch.equal(
            new.state[p]["momentum_buffer"], old.state[old_params[name]]["momentum_buffer"]
        )
    with pytest.raises(CheckpointError, match="has 10 parameters but 9 names were given"):
        optimizer_state_from_torch(torch_state, names[:9])


def test_state_of_an_optimizer_without_param_names_via_the_model(make_detector):
    model = make_detector()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    train(model, optimizer, range(1))
    state = optimizer_state_by_name(optimizer, model)
    assert sorted(state["state"]) == sorted(n for n, _ in model.named_parameters())
    assert set(state["groups"].values()) == {"group0"}
    assert state["group_hparams"]["group0"]["momentum"] == 0.9


def test_index_keyed_state_is_rejected(make_detector):
    model = make_detector()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(CheckpointError, match="optimizer state is not keyed by parameter name"):
        load_optimizer_state_by_name(optimizer, optimizer.state_dict())


def test_state_of_another_optimizer_type_is_not_restored(make_detector, caplog):
    old_model = make_detector()
    old = OPTIMIZERS["sgd"](one_group(old_model))
    train(old_model, old, range(1))
    saved = checkpoint_round_trip(optimizer_state_by_name(old))
    model = make_detector()
    new = OPTIMIZERS["adamw"](one_group(model))
    with caplog.at_level(logging.WARNING, logger="pgtrain.param_groups.state"):
        report = load_optimizer_state_by_name(new, saved)
    assert report.optimizer_changed == ("SGD", "AdamW")
    assert not report.restored and len(report.added) == 10 and not new.state
    assert "the optimizer changed from SGD to AdamW: all state starts fresh" in caplog.text
    train(model, new, range(1))  # AdamW initializes its own state
