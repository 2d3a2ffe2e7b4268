"""LRMultiplier: ratios between groups, per-group schedules, LR-0 windows, and resume."""

import io

import pytest
import torch
from torch import nn

from pgtrain.errors import CheckpointError, ConfigError
from pgtrain.solver.schedules.lr_multiplier import LRMultiplier, group_lr_curves, param_group_names
from pgtrain.solver.schedules.registry import LR_SCHEDULES, build_schedule

MAX_ITER = 40

# One example per registered schedule; a new entry without an example fails the test below.
EXAMPLES = {
    "constant": dict(value=0.5, warmup_length=0.1),
    "multistep": dict(milestones=[0.5, 0.75], warmup_length=0.1, warmup_factor=0.1),
    "step": dict(step_size=0.3, gamma=0.5),
    "half_period_cosine": dict(warmup_length=8, warmup_factor=0.1, unit="iter", max_iter=40),
    "cosine": dict(end_ratio=0.05, warmup_length=0.2, warmup_method="constant"),
    "linear": dict(end_ratio=0.1),
    "polynomial": dict(power=0.9),
    "exponential": dict(end_ratio=0.01),
    "composite": dict(
        schedules=[{"name": "linear", "end_ratio": 0.5}, {"name": "cosine"}], lengths=[0.25, 0.75]
    ),
    "delayed_start": dict(hold_length=0.2, warmup_length=0.1, schedule={"name": "cosine"}),
}


def three_groups(opt_cls=torch.optim.SGD, lrs=(0.1, 1.0, 0.01), **opt_kwargs):
    """A tiny model with groups backbone / head / norm at LR ratios 1 : 10 : 0.1."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 2), nn.LayerNorm(2))
    groups = [
        {"params": list(m.parameters()), "name": n, "lr": lr}
        for m, n, lr in zip(model, ["backbone", "head", "norm"], lrs, strict=True)
    ]
    return model, opt_cls(groups, **opt_kwargs)


def train_step(model, optimizer, scheduler, seed):
    g = torch.Generator().manual_seed(seed)
    x, y = torch.randn(8, 4, generator=g), torch.randn(8, 2, generator=g)
    optimizer.zero_grad()
    nn.functional.mse_loss(model(x), y).backward()
    optimizer.step()
    scheduler.step()


def test_every_registered_schedule_has_an_example():
    assert sorted(EXAMPLES) == LR_SCHEDULES.names()


@pytest.mark.parametrize("name", LR_SCHEDULES.names())
@pytest.mark.parametrize("opt_cls", [torch.optim.SGD, torch.optim.AdamW, torch.optim.Adagrad])
def test_every_schedule_keeps_group_ratios(name, opt_cls):
    model, optimizer = three_groups(opt_cls)
    schedule = build_schedule(name, **EXAMPLES[name])
    scheduler = LRMultiplier(optimizer, schedule, MAX_ITER)
    for it in range(MAX_ITER):
        lrs = [g["lr"] for g in optimizer.param_groups]
        m = schedule(it / MAX_ITER)
        assert lrs == pytest.approx([0.1 * m, 1.0 * m, 0.01 * m], rel=1e-12, abs=0.0)
        if lrs[0] > 0:
            assert lrs[1] / lrs[0] == pytest.approx(10.0, rel=1e-12)
            assert lrs[2] / lrs[0] == pytest.approx(0.1, rel=1e-12)
        train_step(model, optimizer, scheduler, it)
    assert scheduler.iter == MAX_ITER


def test_lr_curves_match_stepping_and_the_standalone_function():
    model, optimizer = three_groups()
    schedule = build_schedule("multistep", milestones=[0.5], warmup_length=0.25)
    delayed = build_schedule("delayed_start", hold_length=0.5, warmup_length=0.25)
    scheduler = LRMultiplier(optimizer, schedule, 8, group_schedules={"head": delayed})
    curves = scheduler.lr_curves()
    stepped = []
    for it in range(8):
        stepped.append([g["lr"] for g in optimizer.param_groups])
        train_step(model, optimizer, scheduler, it)
    assert [list(c) for c in zip(*curves.values(), strict=True)] == stepped
    standalone = group_lr_curves(
        {"backbone": 0.1, "head": 1.0, "norm": 0.01}, schedule, 8, group_schedules={"head": delayed}
    )
    assert standalone == curves
    # head: held at 0 for half of training, then warms up into the main schedule (gamma 0.1).
    assert curves["head"][:4] == [0.0] * 4
    assert curves["head"][6] == pytest.approx(1.0 * 0.1)


def test_lr_after_the_last_step_stays_at_the_last_iteration():
    model, optimizer = three_groups()
    scheduler = LRMultiplier(optimizer, build_schedule("constant", value=0.5), 3)
    for it in range(3):
        train_step(model, optimizer, scheduler, it)
    assert scheduler.get_last_lr() == pytest.approx([0.05, 0.5, 0.005])


def test_last_iter_and_tensor_lrs():
    model = nn.Linear(2, 2)
    optimizer = torch.optim.Adam(model.parameters(), lr=torch.tensor(0.01))
    scheduler = LRMultiplier(optimizer, build_schedule("linear"), 10, last_iter=4)
    assert scheduler.iter == 5  # last_iter is the last finished iteration
    group = optimizer.param_groups[0]
    assert torch.is_tensor(group["lr"]) and group["lr"].item() == pytest.approx(0.01 * (1 - 0.5))
    assert group["initial_lr"].item() == pytest.approx(0.01)  # not aliased to the updated lr


def test_group_names():
    groups = [{"name": "a"}, {}, {"name": "a"}, {"name": ""}]
    assert param_group_names(groups) == ["a", "group1", "a#2", "group3"]


def test_unknown_group_schedule_lists_real_groups():
    _, optimizer = three_groups()
    with pytest.raises(ConfigError, match=r"'backbon'; did you mean 'backbone'\? Groups: backbone"):
        LRMultiplier(optimizer, build_schedule("cosine"), 10, group_schedules={"backbon": {}})


def test_delayed_start_cannot_be_the_main_schedule():
    _, optimizer = three_groups()
    with pytest.raises(ConfigError, match="cannot be the main schedule"):
        LRMultiplier(optimizer, build_schedule("delayed_start", hold_length=0.1), 10)


def test_group_schedule_from_mapping_and_bad_max_iter():
    _, optimizer = three_groups()
    scheduler = LRMultiplier(
        optimizer,
        {"name": "constant"},
        10,
        group_schedules={"norm": {"name": "constant", "value": 0}},
    )
    assert [g["lr"] for g in optimizer.param_groups] == [0.1, 1.0, 0.0]
    with pytest.raises(ConfigError, match="max_iter must be a positive integer"):
        LRMultiplier(optimizer, {"name": "constant"}, 0)
    assert scheduler.group_names == ["backbone", "head", "norm"]


# --- a group held at LR 0 keeps its weights bit-identical ----------------------------------------
OPTIMIZERS = [
    (torch.optim.SGD, dict(momentum=0.9, weight_decay=0.01)),
    (torch.optim.SGD, dict(momentum=0.9, weight_decay=0.01, nesterov=True)),
    (torch.optim.AdamW, dict(weight_decay=0.1)),
    (torch.optim.Adam, dict(weight_decay=0.1)),
]


def snapshot(module):
    return [p.detach().clone() for p in module.parameters()]


def same(a, b):
    return all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


@pytest.mark.parametrize("opt_cls, kwargs", OPTIMIZERS)
def test_delayed_start_keeps_backbone_bit_identical_while_held(opt_cls, kwargs):
    model, optimizer = three_groups(opt_cls, **kwargs)
    hold = build_schedule("delayed_start", hold_length=0.5, warmup_length=0.25)
    scheduler = LRMultiplier(
        optimizer, build_schedule("cosine"), 12, group_schedules={"backbone": hold}
    )
    backbone0, head0 = snapshot(model[0]), snapshot(model[1])
    for it in range(6):  # iterations 0..5: where < 0.5, backbone LR exactly 0
        train_step(model, optimizer, scheduler, it)
        assert same(snapshot(model[0]), backbone0)
        # Gradients flow (nothing toggled requires_grad, so DDP sees the same parameters).
        assert all(p.requires_grad and p.grad.abs().sum() > 0 for p in model[0].parameters())
    assert not same(snapshot(model[1]), head0)
    for it in range(6, 12):
        train_step(model, optimizer, scheduler, it)
    assert not same(snapshot(model[0]), backbone0)


@pytest.mark.parametrize("opt_cls, kwargs", OPTIMIZERS)
def test_zero_window_after_momentum_built_up_keeps_weights(opt_cls, kwargs):
    model, optimizer = three_groups(opt_cls, **kwargs)
    # backbone: LR × 1 for 30% of training, × 0 for 40%, × 1 again (iterations 6..13 of 20 at 0).
    window = build_schedule(
        "composite",
        schedules=[{"name": "constant"}, {"name": "constant", "value": 0.0}, {"name": "constant"}],
        lengths=[0.3, 0.4, 0.3],
    )
    scheduler = LRMultiplier(
        optimizer, build_schedule("constant"), 20, group_schedules={"backbone": window}
    )
    for it in range(6):
        train_step(model, optimizer, scheduler, it)
    state = optimizer.state[model[0].weight]
    buffers = [v for v in state.values() if torch.is_tensor(v) and v.numel() > 1]
    assert buffers and all(b.abs().sum() > 0 for b in buffers)  # momentum / moments built up
    backbone = snapshot(model[0])
    for it in range(6, 14):
        train_step(model, optimizer, scheduler, it)
        assert same(snapshot(model[0]), backbone)
    train_step(model, optimizer, scheduler, 14)
    assert not same(snapshot(model[0]), backbone)


# --- resume ---------------------------------------------------------------------------------------
def make_run(opt_cls, kwargs, lrs=(0.1, 1.0, 0.01)):
    model, optimizer = three_groups(opt_cls, lrs=lrs, **kwargs)
    schedule = build_schedule("multistep", milestones=[0.5], warmup_length=0.3, warmup_factor=0.1)
    delayed = build_schedule("delayed_start", hold_length=0.2, warmup_length=0.2)
    scheduler = LRMultiplier(optimizer, schedule, 10, group_schedules={"backbone": delayed})
    return model, optimizer, scheduler


def roundtrip(obj):
    buf = io.BytesIO()
    torch.save(obj, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


@pytest.mark.parametrize("opt_cls, kwargs", OPTIMIZERS[::2])
@pytest.mark.parametrize("scheduler_first", [True, False])
def test_resume_mid_schedule_equals_unbroken_run(opt_cls, kwargs, scheduler_first):
    model, optimizer, scheduler = make_run(opt_cls, kwargs)
    unbroken = []
    for it in range(10):
        unbroken.append([g["lr"] for g in optimizer.param_groups])
        train_step(model, optimizer, scheduler, it)

    model, optimizer, scheduler = make_run(opt_cls, kwargs)
    resumed = []
    for it in range(4):
        resumed.append([g["lr"] for g in optimizer.param_groups])
        train_step(model, optimizer, scheduler, it)
    ckpt = roundtrip(
        {
            "model": model.state_dict(),
            "opt": optimizer.state_dict(),
            "sched": scheduler.state_dict(),
        }
    )
    model, optimizer, scheduler = make_run(opt_cls, kwargs)
    model.load_state_dict(ckpt["model"])
    # Either order works: the optimizer load re-applies the scheduler's LRs.
    if scheduler_first:
        scheduler.load_state_dict(ckpt["sched"])
        optimizer.load_state_dict(ckpt["opt"])
    else:
        optimizer.load_state_dict(ckpt["opt"])
        scheduler.load_state_dict(ckpt["sched"])
    for it in range(4, 10):
        resumed.append([g["lr"] for g in optimizer.param_groups])
        train_step(model, optimizer, scheduler, it)
    assert resumed == unbroken
    final_unbroken = snapshot(make_and_run_unbroken(opt_cls, kwargs))
    assert same(snapshot(model), final_unbroken)


def make_and_run_unbroken(opt_cls, kwargs):
    model, optimizer, scheduler = make_run(opt_cls, kwargs)
    for it in range(10):
        train_step(model, optimizer, scheduler, it)
    return model


def test_resume_with_new_lrs_and_fewer_groups_keeps_the_iteration():
    model, optimizer, scheduler = make_run(torch.optim.SGD, {})
    for it in range(6):
        train_step(model, optimizer, scheduler, it)
    state = roundtrip(scheduler.state_dict())
    assert state["last_iter"] == 6 and state["group_names"] == ["backbone", "head", "norm"]

    # The new config: two groups with other LRs.
    model = nn.Linear(4, 2)
    optimizer = torch.optim.SGD(
        [{"params": [model.weight], "name": "w", "lr": 0.5}, {"params": [model.bias], "lr": 2.0}]
    )
    schedule = build_schedule("multistep", milestones=[0.5], warmup_length=0.3, warmup_factor=0.1)
    scheduler = LRMultiplier(optimizer, schedule, 10)
    scheduler.load_state_dict(state)
    m = schedule(6 / 10)  # 0.1: past the milestone
    assert [g["lr"] for g in optimizer.param_groups] == pytest.approx([0.5 * m, 2.0 * m])
    assert [g["initial_lr"] for g in optimizer.param_groups] == [0.5, 2.0]
    assert scheduler.iter == 6


def test_optimizer_state_from_an_old_config_does_not_bring_back_old_lrs():
    model, optimizer, scheduler = make_run(torch.optim.SGD, {})
    train_step(model, optimizer, scheduler, 0)
    ckpt = roundtrip({"opt": optimizer.state_dict(), "sched": scheduler.state_dict()})
    model, optimizer, scheduler = make_run(torch.optim.SGD, {}, lrs=(0.2, 3.0, 0.05))
    scheduler.load_state_dict(ckpt["sched"])
    optimizer.load_state_dict(ckpt["opt"])  # restores the checkpoint's lr / initial_lr ...
    assert [g["initial_lr"] for g in optimizer.param_groups] == [0.2, 3.0, 0.05]  # ... undone
    assert [g["lr"] for g in optimizer.param_groups] == pytest.approx(scheduler.lrs_at(1))


def test_load_state_dict_rejects_foreign_state():
    _, optimizer, scheduler = make_run(torch.optim.SGD, {})
    with pytest.raises(CheckpointError, match="last_iter"):
        scheduler.load_state_dict({"foo": 1})


def test_lr_factor_survives_steps_and_resume():
    model, optimizer = three_groups()
    schedule = build_schedule("multistep", milestones=[0.2])
    scheduler = LRMultiplier(optimizer, schedule, 10)
    scheduler.set_lr_factor(2.0)
    for it in range(3):  # the milestone at iteration 2 does not overwrite the factor
        m = schedule(it / 10)
        expected = [0.1 * m * 2.0, 1.0 * m * 2.0, 0.01 * m * 2.0]
        assert [g["lr"] for g in optimizer.param_groups] == pytest.approx(expected, rel=1e-12)
        train_step(model, optimizer, scheduler, it)
    state = roundtrip(scheduler.state_dict())
    _, optimizer2 = three_groups()
    scheduler2 = LRMultiplier(optimizer2, schedule, 10)
    scheduler2.load_state_dict(state)
    # The factor is this run's (batch-size scaling sets it and restores its own state), as the
    # LRs are; the iteration comes from the checkpoint.
    assert scheduler2.lr_factor == 1.0 and scheduler2.iter == 3
    scheduler2.set_lr_factor(2.0)
    assert [g["lr"] for g in optimizer2.param_groups] == [g["lr"] for g in optimizer.param_groups]
    with pytest.raises(ConfigError, match="lr_factor"):
        scheduler.set_lr_factor(0)
