"""Batch-size LR scaling: the rules, the log line, accumulation, and the dynamic mode (seed 003)."""

import io
import math

import pytest
import torch
from torch import nn

from pgtrain.errors import ConfigError
from pgtrain.solver.lr_scaling import (
    BatchSizeLRScaling,
    describe_lr_scaling,
    effective_batch_size,
    scale_lr,
)
from pgtrain.solver.schedules.lr_multiplier import LRMultiplier
from pgtrain.solver.schedules.registry import build_schedule


def seed003_optimizer():
    """Seed 003's example: three Linear layers in three Adam groups with LRs 1e-3, 2e-3, 3e-3."""
    model = nn.Sequential(nn.Linear(4, 3), nn.Linear(3, 2), nn.Linear(2, 1))
    return torch.optim.Adam(
        [
            {"params": model[0].parameters(), "lr": 0.001, "eps": 1e-8},
            {"params": model[1].parameters(), "lr": 0.002, "eps": 1e-8},
            {"params": model[2].parameters(), "lr": 0.003, "eps": 1e-8},
        ]
    )


def test_linear_and_sqrt_rules():
    assert scale_lr(0.01, 16, 32) == pytest.approx(0.01 * 32 / 16)
    assert scale_lr(0.01, 16, 8) == pytest.approx(0.01 * 8 / 16)
    assert scale_lr(0.01, 64, 128, rule="sqrt") == pytest.approx(0.01 * math.sqrt(128 / 64))


def test_log_line():
    assert describe_lr_scaling(0.01, 16, 32) == "lr 0.02 = 0.01 × (32/16) [linear, reference 16]"
    assert (
        describe_lr_scaling(0.01, 16, 32, rule="sqrt")
        == "lr 0.0141421 = 0.01 × sqrt(32/16) [sqrt, reference 16]"
    )


def test_effective_batch_counts_processes_and_accumulation():
    assert effective_batch_size(8) == 8
    assert effective_batch_size(8, world_size=2, accumulation_steps=4) == 8 * 2 * 4
    # 16 per process on one process, accumulating 2 micro-batches: the optimizer sees 32.
    effective = effective_batch_size(16, world_size=1, accumulation_steps=2)
    assert scale_lr(0.01, 16, effective) == pytest.approx(0.02)


def test_scaling_at_the_start_is_the_schedulers_factor_on_every_group():
    optimizer = seed003_optimizer()
    optimizer.param_groups[0]["name"] = "base"
    scheduler = LRMultiplier(optimizer, build_schedule("constant"), 10)
    scaling = BatchSizeLRScaling(scheduler, 16)
    assert scaling.update(32)
    assert [g["lr"] for g in optimizer.param_groups] == pytest.approx([0.002, 0.004, 0.006])
    # the groups keep the config's LRs; the factor is the scheduler's, written into each group
    assert [g["initial_lr"] for g in optimizer.param_groups] == [0.001, 0.002, 0.003]
    assert [g["lr_factor"] for g in optimizer.param_groups] == [2.0, 2.0, 2.0]
    assert scheduler.lr_factor == 2.0
    assert scaling.summary() == (
        "lr = initial × (32/16) [linear, reference 16]: "
        "base 0.001 → 0.002, group1 0.002 → 0.004, group2 0.003 → 0.006"
    )
    one = torch.optim.SGD(nn.Linear(2, 1).parameters(), lr=0.01)
    single = BatchSizeLRScaling(one, 16)
    single.update(32)
    assert single.summary() == "lr 0.02 = 0.01 × (32/16) [linear, reference 16]"
    assert one.param_groups[0]["lr"] == pytest.approx(0.02)


def test_an_optimizer_a_scheduler_drives_is_scaled_through_the_scheduler():
    optimizer = seed003_optimizer()
    LRMultiplier(optimizer, build_schedule("constant"), 10)
    with pytest.raises(ConfigError, match="scale through the scheduler"):
        BatchSizeLRScaling(optimizer, 16)


def test_seed003_sqrt_rule_batch_64_to_128():
    optimizer = seed003_optimizer()
    scaling = BatchSizeLRScaling(optimizer, reference_batch=64, rule="sqrt")
    assert scaling.update(64) is None  # unchanged batch: nothing to do
    line = scaling.update(128)
    # Seed 003's printed LRs: each group's LR × sqrt(128 / 64) = × 1.414...
    assert [g["lr"] for g in optimizer.param_groups] == pytest.approx(
        [0.0014142135623730952, 0.0028284271247461905, 0.004242640687119286], rel=1e-15
    )
    assert line == (
        "effective batch 64 → 128: lr = initial × sqrt(128/64) = initial × 1.41421 "
        "[sqrt, reference 64]"
    )
    scaling.update(64)  # back to the reference batch: back to the initial LRs
    assert [g["lr"] for g in optimizer.param_groups] == pytest.approx([0.001, 0.002, 0.003])


def test_dynamic_scaling_composes_with_the_schedule():
    optimizer = seed003_optimizer()
    schedule = build_schedule("multistep", milestones=[0.5], warmup_length=0.25, warmup_factor=0.5)
    scheduler = LRMultiplier(optimizer, schedule, 8)
    scaling = BatchSizeLRScaling(scheduler, reference_batch=64, rule="sqrt")
    for it in range(8):
        if it == 3:
            scaling.update(128)
        factor = math.sqrt(2) if it >= 3 else 1.0
        m = schedule(it / 8)
        expected = [0.001 * m * factor, 0.002 * m * factor, 0.003 * m * factor]
        assert [g["lr"] for g in optimizer.param_groups] == pytest.approx(expected, rel=1e-12)
        optimizer.step()
        scheduler.step()  # the schedule's next value keeps the batch factor


def test_dynamic_scaling_resumes():
    optimizer = seed003_optimizer()
    scheduler = LRMultiplier(optimizer, build_schedule("constant"), 8)
    scaling = BatchSizeLRScaling(scheduler, reference_batch=32, rule="linear")
    scaling.update(96)
    buf = io.BytesIO()
    torch.save({"scaling": scaling.state_dict()}, buf)
    buf.seek(0)
    state = torch.load(buf, weights_only=True)

    optimizer2 = seed003_optimizer()
    scaling2 = BatchSizeLRScaling(LRMultiplier(optimizer2, build_schedule("constant"), 8), 32)
    scaling2.load_state_dict(state["scaling"])
    assert scaling2.batch == 96 and scaling2.factor == pytest.approx(3.0)
    assert [g["lr"] for g in optimizer2.param_groups] == pytest.approx([0.003, 0.006, 0.009])


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: scale_lr(0.1, 16, 32, rule="sqr"), "rule='sqr' .*did you mean 'sqrt'"),
        (lambda: scale_lr(0.1, 0, 32), "reference_batch must be a positive integer"),
        (lambda: scale_lr(0.1, 16, 2.5), "effective_batch must be a positive integer"),
        (lambda: effective_batch_size(8, accumulation_steps=0), "accumulation_steps"),
        (lambda: BatchSizeLRScaling(seed003_optimizer(), 64, rule="log"), "rule='log'"),
    ],
)
def test_bad_arguments_name_themselves(call, match):
    with pytest.raises(ConfigError, match=match):
        call()
