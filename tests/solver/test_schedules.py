"""Schedules in LR_SCHEDULES: hand-computed values, units, and argument errors."""

import math

import pytest

from pgtrain.errors import ConfigError, RegistryError
from pgtrain.solver.schedules.registry import LR_SCHEDULES, as_schedule, build_schedule

MAX_ITER = 100


def values(schedule, iters, max_iter=MAX_ITER):
    return [schedule(i / max_iter) for i in iters]


# --- seed 002: WarmupMultiStepLR -----------------------------------------------------------------
# The seed's config: milestones and warmup in epochs × iters per epoch. Here 10 iters per epoch,
# milestones at epochs 5 and 8 (iters 50, 80), 2 warmup epochs (20 iters), factor 0.1, gamma 0.1.
SEED_MULTISTEP = dict(
    name="multistep",
    milestones=[5, 8],
    gamma=0.1,
    warmup_length=2,
    warmup_factor=0.1,
    unit="epoch",
    iters_per_epoch=10,
    max_iter=MAX_ITER,
)


def test_multistep_linear_warmup_matches_seed_formula():
    s = build_schedule(**SEED_MULTISTEP, warmup_method="linear")
    # linear warmup: warmup_factor * (1 - alpha) + alpha with alpha = iter / warmup_iters
    expected = {
        0: 0.1,
        5: 0.1 * (1 - 5 / 20) + 5 / 20,  # 0.325
        19: 0.1 * (1 - 19 / 20) + 19 / 20,  # 0.955
        20: 1.0,
        49: 1.0,
        50: 0.1,  # gamma ** 1
        79: 0.1,
        80: 0.1**2,
        99: 0.1**2,
    }
    assert values(s, expected) == pytest.approx(list(expected.values()), rel=1e-12)


def test_multistep_constant_warmup_matches_seed_formula():
    s = build_schedule(**SEED_MULTISTEP, warmup_method="constant")
    expected = {0: 0.1, 10: 0.1, 19: 0.1, 20: 1.0, 50: 0.1, 80: 0.01}
    assert values(s, expected) == pytest.approx(list(expected.values()), rel=1e-12)


def test_multistep_milestone_inside_warmup_multiplies_as_in_seed():
    # The seed multiplies the warmup factor by gamma ** bisect(milestones, iter).
    s = build_schedule(
        "multistep",
        milestones=[10],
        warmup_length=20,
        warmup_factor=0.1,
        unit="iter",
        max_iter=MAX_ITER,
    )
    assert s(15 / MAX_ITER) == pytest.approx((0.1 * (1 - 15 / 20) + 15 / 20) * 0.1, rel=1e-12)


@pytest.mark.parametrize(
    "units",
    [
        dict(unit="iter", milestones=[50, 80], warmup_length=20, max_iter=MAX_ITER),
        dict(unit="epoch", milestones=[5, 8], warmup_length=2, iters_per_epoch=10, max_iter=100),
        dict(unit="fraction", milestones=[0.5, 0.8], warmup_length=0.2),
        dict(milestones=[0.5, 0.8], warmup_length=0.2, max_iter=MAX_ITER),
    ],
)
def test_units_give_the_same_schedule(units):
    reference = build_schedule(**SEED_MULTISTEP)
    s = build_schedule("multistep", warmup_factor=0.1, **units)
    iters = range(MAX_ITER)
    assert values(s, iters) == pytest.approx(values(reference, iters), rel=1e-12)


def test_fractions_rescale_with_max_iter():
    s = build_schedule("multistep", milestones=[0.5], max_iter=400)
    # where = iter / max_iter, so with 400 iterations the drop happens at iteration 200.
    assert values(s, [199, 200], max_iter=400) == [1.0, 0.1]


def test_iteration_milestones_stay_put_when_max_iter_changes():
    s = build_schedule("multistep", milestones=[50], unit="iter", max_iter=400)
    assert values(s, [49, 50], max_iter=400) == [1.0, 0.1]


# --- seed 002: HalfPeriodCosStepLR ---------------------------------------------------------------
def test_half_period_cosine_linear_warmup_matches_seed_formula():
    s = build_schedule(
        "half_period_cosine", warmup_length=20, warmup_factor=0.1, unit="iter", max_iter=MAX_ITER
    )
    expected = {
        0: 0.1,
        10: 0.1 * (1 - 10 / 20) + 10 / 20,  # warmup factor only, as in the seed
        19: 0.1 * (1 - 19 / 20) + 19 / 20,
        20: 0.5 * (math.cos(20 / 100 * math.pi) + 1),  # cosine of the global iteration
        60: 0.5 * (math.cos(60 / 100 * math.pi) + 1),
        99: 0.5 * (math.cos(99 / 100 * math.pi) + 1),
    }
    assert values(s, expected) == pytest.approx(list(expected.values()), rel=1e-12)


def test_half_period_cosine_constant_warmup_matches_seed_formula():
    s = build_schedule(
        "half_period_cosine", warmup_length=0.2, warmup_factor=0.1, warmup_method="constant"
    )
    expected = {0: 0.1, 19: 0.1, 20: 0.5 * (math.cos(0.2 * math.pi) + 1)}
    assert values(s, expected) == pytest.approx(list(expected.values()), rel=1e-12)


# --- the other schedules -------------------------------------------------------------------------
def test_constant():
    s = build_schedule(
        "constant", value=0.5, warmup_length=0.1, warmup_factor=0.2, warmup_method="constant"
    )
    assert values(s, [0, 9, 10, 99]) == pytest.approx([0.5 * 0.2, 0.5 * 0.2, 0.5, 0.5])


def test_cosine_with_floor_and_warmup():
    s = build_schedule("cosine", end_ratio=0.1, warmup_length=0.1, warmup_factor=0.001)
    cos = lambda w: 0.1 + 0.5 * (1 - 0.1) * (1 + math.cos(math.pi * w))  # noqa: E731
    expected = {
        0: cos(0) * 0.001,
        5: cos(0.05) * (0.001 * (1 - 0.5) + 0.5),  # warmup multiplies the cosine
        10: cos(0.1),
        50: 0.1 + 0.5 * 0.9 * 1,  # 0.55
        99: cos(0.99),
    }
    assert values(s, expected) == pytest.approx(list(expected.values()), rel=1e-12)
    assert s(0.999999) == pytest.approx(0.1, rel=1e-6)  # the floor is a ratio


def test_linear():
    s = build_schedule("linear", end_ratio=0.2)
    assert values(s, [0, 25, 50]) == pytest.approx([1.0, 0.75 + 0.2 * 0.25, 0.5 + 0.2 * 0.5])


def test_polynomial():
    s = build_schedule("polynomial", power=2.0)
    assert values(s, [0, 50, 90]) == pytest.approx([1.0, 0.5**2, 0.1**2])


def test_step():
    s = build_schedule("step", step_size=30, gamma=0.5, unit="iter", max_iter=MAX_ITER)
    expected = {0: 1.0, 29: 1.0, 30: 0.5, 59: 0.5, 60: 0.25, 90: 0.125, 99: 0.125}
    assert values(s, expected) == list(expected.values())


def test_exponential():
    s = build_schedule("exponential", end_ratio=0.01)
    assert values(s, [0, 50]) == pytest.approx([1.0, 0.01**0.5])


def test_composite_of_mappings():
    s = build_schedule(
        "composite",
        schedules=[{"name": "constant"}, {"name": "linear", "end_ratio": 0.0}],
        lengths=[30, 70],
        unit="iter",
        max_iter=MAX_ITER,
    )
    # 1 for 30%, then linear 1 -> 0 over the remaining 70% (rescaled to its own [0, 1)).
    expected = {0: 1.0, 29: 1.0, 30: 1.0, 65: 1 - (65 - 30) / 70, 99: 1 - (99 - 30) / 70}
    assert values(s, expected) == pytest.approx(list(expected.values()), rel=1e-9)


def test_delayed_start_holds_then_warms_into_its_schedule():
    s = build_schedule(
        "delayed_start",
        hold_length=0.1,
        warmup_length=0.1,
        warmup_factor=0.0,
        schedule={"name": "linear", "end_ratio": 0.0},
    )
    expected = {
        0: 0.0,
        9: 0.0,
        10: 0.0 * (1 - 0.9),  # ramp starts at warmup_factor = 0
        15: (1 - 0.15) * (5 / 10),  # linear schedule × ramp (15 - 10) / 10
        20: 1 - 0.2,
        60: 1 - 0.6,
    }
    assert values(s, expected) == pytest.approx(list(expected.values()), rel=1e-12)


def test_delayed_start_without_schedule_only_as_group_schedule():
    s = build_schedule("delayed_start", hold_length=0.1)
    with pytest.raises(ConfigError, match="group_schedules"):
        s(0.5)


def test_config_interpolation_rescales_with_train_max_iter():
    from omegaconf import OmegaConf

    from pgtrain.config import LazyCall as L
    from pgtrain.config import instantiate

    node = L(build_schedule)(
        name="multistep", milestones=[60], unit="iter", max_iter="${train.max_iter}"
    )
    cfg = OmegaConf.create({"train": {"max_iter": 100}, "schedule": node})
    cfg.train.max_iter = 120  # a command-line override
    s = instantiate(cfg.schedule)
    assert values(s, [59, 60], max_iter=120) == [1.0, 0.1]


# --- errors name the argument --------------------------------------------------------------------
@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(name="cosin"), "did you mean 'cosine'"),
        (
            dict(name="multistep", milestone=[0.5]),
            "unexpected keyword 'milestone' for schedule 'multistep'; did you mean 'milestones'",
        ),
        (
            dict(name="multistep"),
            "schedule 'multistep' needs 'milestones'; set lr_scheduler.schedule.milestones",
        ),
        (dict(name="multistep", milestones=[60000]), r"milestones\[0\]=60000 .* unit='iter'"),
        (dict(name="multistep", milestones=[0.8, 0.5]), "strictly increasing"),
        (dict(name="cosine", unit="iters"), "unit='iters' .* did you mean 'iter'"),
        (dict(name="cosine", unit="iter", warmup_length=10), "needs max_iter"),
        (dict(name="cosine", unit="epoch", max_iter=10), "needs iters_per_epoch"),
        (dict(name="cosine", warmup_method="linaer"), "warmup_method='linaer'.*'linear'"),
        (dict(name="cosine", max_iter=0), "max_iter must be a positive integer"),
        (dict(name="cosine", end_ratio=-1), "end_ratio=-1"),
        (dict(name="exponential", end_ratio=0), "end_ratio must be > 0"),
        (dict(name="composite", schedules=[{"name": "constant"}], lengths=[0.5]), "add up"),
        (dict(name="composite", schedules=[{"end_ratio": 0}], lengths=[1]), "must name"),
    ],
)
def test_bad_arguments_raise_naming_them(kwargs, match):
    with pytest.raises((ConfigError, RegistryError), match=match):
        build_schedule(**kwargs)


def test_as_schedule_rejects_non_schedules():
    with pytest.raises(ConfigError, match="schedule must be a schedule"):
        as_schedule(3, "schedule")


def test_registry_holds_the_issue_schedules():
    expected = {
        "constant",
        "multistep",
        "half_period_cosine",
        "cosine",
        "linear",
        "polynomial",
        "step",
        "exponential",
        "composite",
        "delayed_start",
    }
    assert expected <= set(LR_SCHEDULES.names())


def test_warmup_wraps_any_schedule_that_does_not_own_one():
    # Entries take only their own options; build_schedule adds units and wraps the warmup.
    import inspect

    for name in ("constant", "multistep", "step", "cosine", "linear", "polynomial", "exponential"):
        own = set(inspect.signature(LR_SCHEDULES.get(name)).parameters)
        assert not own & {"warmup_length", "warmup_factor", "warmup_method", "unit", "max_iter"}
    s = build_schedule(name="constant", value=0.5, warmup_length=0.5, warmup_factor=0.1)
    assert s(0.0) == pytest.approx(0.05) and s(0.75) == pytest.approx(0.5)
    # constant warmup; and lengths in iterations, converted once for the wrapper and the entry
    s = build_schedule(
        name="multistep",
        milestones=[50],
        unit="iter",
        max_iter=100,
        warmup_length=10,
        warmup_factor=0.2,
        warmup_method="constant",
    )
    assert [s(w) for w in (0.0, 0.09, 0.1, 0.49, 0.5)] == pytest.approx([0.2, 0.2, 1.0, 1.0, 0.1])
