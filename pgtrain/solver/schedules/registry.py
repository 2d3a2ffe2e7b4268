"""LR_SCHEDULES: multiplier schedules by name, and `build_schedule` to pick one from a config.

Every entry returns an fvcore ``ParamScheduler``: a pure function of ``where = iter / max_iter``
giving a multiplier of each group's own initial LR, so ratios between groups survive warmup,
decay and floors (floors and warmup starts are ratios, never absolute LRs).

Arguments `build_schedule` handles for every entry (an entry takes only its own, plus ``units``):

- ``unit``: how positions and lengths (milestones, step sizes, warmup and hold lengths) are given.
  ``"fraction"`` (default) of training, so overriding ``train.max_iter`` rescales them;
  ``"iter"`` needs ``max_iter``; ``"epoch"`` needs ``max_iter`` and ``iters_per_epoch``.
- ``max_iter``, ``iters_per_epoch``: for the unit conversion (``max_iter="${train.max_iter}"``).
- ``warmup_length``, ``warmup_factor``, ``warmup_method``: STMixer's warmup, as a factor that
  multiplies the schedule: ``"linear"`` from ``warmup_factor`` to 1, or ``"constant"``
  ``warmup_factor``, for ``warmup_length`` (0 disables it).

Example config::

    schedule = L(build_schedule)(name="multistep", milestones=[0.67, 0.89], warmup_length=0.01,
                                 warmup_factor=0.001, max_iter="${train.max_iter}")
"""

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from fvcore.common.param_scheduler import (
    CompositeParamScheduler,
    ConstantParamScheduler,
    CosineParamScheduler,
    ExponentialParamScheduler,
    LinearParamScheduler,
    ParamScheduler,
    PolynomialDecayParamScheduler,
)

from pgtrain.config.lazy_call import signature_keywords
from pgtrain.errors import ConfigError
from pgtrain.registry import Registry
from pgtrain.solver._checks import number
from pgtrain.solver.schedules.param_schedulers import (
    DelayedStartSchedule,
    MultiStepSchedule,
    WarmupSchedule,
    check_warmup,
)
from pgtrain.solver.schedules.units import ScheduleUnits

__all__ = ["LR_SCHEDULES", "as_schedule", "build_schedule", "with_warmup"]

LR_SCHEDULES = Registry(
    "LR_SCHEDULES",
    hint="importing pgtrain.solver registers the built-in schedules; a project adds "
    "its own with @LR_SCHEDULES.register() in a module its config imports",
)


_WARMUP_KEYS = ("warmup_length", "warmup_factor", "warmup_method")


def build_schedule(name: str, **kwargs: Any) -> ParamScheduler:
    """Builds the schedule registered as `name` in LR_SCHEDULES with `kwargs`.

    The options every schedule shares are handled here, so an entry takes only its own: the
    units (``unit``, ``max_iter``, ``iters_per_epoch``) become a `ScheduleUnits` passed as
    ``units``, and the warmup (``warmup_length``, ``warmup_factor``, ``warmup_method``) wraps the
    entry's schedule (as Detectron2's ``WarmupParamScheduler`` does), unless the entry takes
    warmup options itself because its warmup means something else (``half_period_cosine``
    replaces the cosine during warmup, ``delayed_start`` warms up after its hold).

    Raises:
        RegistryError: `name` is not registered (the message lists close and known names).
        ConfigError: an argument is unknown, missing or invalid (the message names it).
    """
    fn = LR_SCHEDULES.get(name)
    own = (signature_keywords(fn) or ([], False))[0]
    units = ScheduleUnits(
        kwargs.pop("unit", "fraction"),
        kwargs.pop("max_iter", None),
        kwargs.pop("iters_per_epoch", None),
    )
    warmup: dict[str, Any] = {}
    if not any(k in own for k in _WARMUP_KEYS):
        warmup = {k: kwargs.pop(k) for k in _WARMUP_KEYS if k in kwargs}
    if "units" in own:
        kwargs["units"] = units
    schedule = LR_SCHEDULES.build(name, kwargs, where="lr_scheduler.schedule", kind="schedule")
    return with_warmup(schedule, units, **warmup)


def with_warmup(
    schedule: ParamScheduler,
    units: ScheduleUnits,
    warmup_length: Any = 0.0,
    warmup_factor: Any = 0.001,
    warmup_method: str = "linear",
) -> ParamScheduler:
    """Returns `schedule` times a warmup factor: ``"linear"`` from `warmup_factor` to 1, or
    ``"constant"`` `warmup_factor`, for `warmup_length` (in `units`; 0 returns `schedule`)."""
    fraction = units.fraction(warmup_length, "warmup_length")
    check_warmup(fraction, number(warmup_factor, "warmup_factor"), warmup_method)
    if fraction == 0:
        return schedule
    return WarmupSchedule(schedule, length=fraction, factor=warmup_factor, method=warmup_method)


def as_schedule(obj: Any, arg: str) -> Callable[[float], float]:
    """Returns `obj` if it is a schedule, builds it if it is a mapping with a "name", else raises.

    Args:
        obj: a ParamScheduler (or any callable of `where`), or ``{"name": ..., **kwargs}``.
        arg: the argument holding `obj`, for the error message.
    """
    if isinstance(obj, Mapping):
        if "name" not in obj:
            raise ConfigError(f"{arg} must name a schedule: {{'name': 'cosine', ...}}")
        kwargs = dict(obj)
        return build_schedule(kwargs.pop("name"), **kwargs)
    if callable(obj):
        return obj
    raise ConfigError(
        f"{arg} must be a schedule (e.g. build_schedule(name='cosine')) or a mapping with a "
        f"'name' from LR_SCHEDULES, got {type(obj).__name__}"
    )


@LR_SCHEDULES.register("constant")
def constant_schedule(
    *,
    value: float = 1.0,
    units: ScheduleUnits,
) -> ParamScheduler:
    """Returns a constant multiplier `value` (after the warmup)."""
    schedule = ConstantParamScheduler(number(value, "value"))
    return schedule


@LR_SCHEDULES.register("multistep")
def multistep_schedule(
    *,
    milestones: Sequence[float],
    gamma: float = 0.1,
    units: ScheduleUnits,
) -> ParamScheduler:
    """Returns STMixer's WarmupMultiStepLR: ``gamma ** (milestones passed)`` times the warmup.

    Args:
        milestones: strictly increasing positions where the multiplier drops by `gamma`.
        gamma: the factor applied at each milestone.
    """
    if not isinstance(milestones, Sequence) or len(milestones) == 0:
        raise ConfigError(f"milestones must be a non-empty list, got {milestones!r}")
    raw = [number(m, f"milestones[{i}]") for i, m in enumerate(milestones)]
    if any(b <= a for a, b in zip(raw, raw[1:], strict=False)):
        raise ConfigError(f"milestones={list(milestones)} must be strictly increasing")
    schedule = MultiStepSchedule(units.fractions(milestones, "milestones"), number(gamma, "gamma"))
    return schedule


@LR_SCHEDULES.register("step")
def step_schedule(
    *,
    step_size: float,
    gamma: float = 0.1,
    units: ScheduleUnits,
) -> ParamScheduler:
    """Returns a multiplier that drops by `gamma` every `step_size` (torch's StepLR).

    Args:
        step_size: the distance between drops (> 0).
        gamma: the factor applied at each drop.
    """
    size = units.fraction(step_size, "step_size")
    if size <= 0:
        raise ConfigError(f"step_size={step_size} must be > 0")
    # Drops at k * size for every k with k * size < 1; k * size is exact for iteration units.
    milestones = [k * size for k in range(1, int(1.0 / size) + 1) if k * size < 1.0]
    schedule = MultiStepSchedule(milestones, number(gamma, "gamma"))
    return schedule


@LR_SCHEDULES.register("half_period_cosine")
def half_period_cosine_schedule(
    *,
    units: ScheduleUnits,
    warmup_length: float = 0.0,
    warmup_factor: float = 0.001,
    warmup_method: str = "linear",
) -> ParamScheduler:
    """Returns STMixer's HalfPeriodCosStepLR: the warmup factor, then ``(1 + cos(pi where)) / 2``.

    Unlike the other entries, the warmup replaces the cosine instead of multiplying it, as in
    STMixer; the cosine runs over the whole of training (not from the end of the warmup).
    """
    length = min(units.fraction(warmup_length, "warmup_length"), 1.0)
    check_warmup(length, number(warmup_factor, "warmup_factor"), warmup_method)
    cosine = CosineParamScheduler(start_value=1.0, end_value=0.0)
    if length == 0:
        return cosine
    if warmup_method == "linear":
        ramp = LinearParamScheduler(start_value=warmup_factor, end_value=1.0)
    else:
        ramp = ConstantParamScheduler(warmup_factor)
    return CompositeParamScheduler(
        [ramp, cosine], lengths=[length, 1.0 - length], interval_scaling=["rescaled", "fixed"]
    )


@LR_SCHEDULES.register("cosine")
def cosine_schedule(
    *,
    end_ratio: float = 0.0,
    units: ScheduleUnits,
) -> ParamScheduler:
    """Returns a cosine decay from 1 to `end_ratio` (the floor, a ratio of each group's LR)."""
    end = _ratio(end_ratio, "end_ratio")
    schedule = CosineParamScheduler(start_value=1.0, end_value=end)
    return schedule


@LR_SCHEDULES.register("linear")
def linear_schedule(
    *,
    end_ratio: float = 0.0,
    units: ScheduleUnits,
) -> ParamScheduler:
    """Returns a linear decay from 1 to `end_ratio` (the floor, a ratio of each group's LR)."""
    end = _ratio(end_ratio, "end_ratio")
    schedule = LinearParamScheduler(start_value=1.0, end_value=end)
    return schedule


@LR_SCHEDULES.register("polynomial")
def polynomial_schedule(
    *,
    power: float = 0.9,
    units: ScheduleUnits,
) -> ParamScheduler:
    """Returns the polynomial decay ``(1 - where) ** power``."""
    schedule = PolynomialDecayParamScheduler(base_value=1.0, power=_ratio(power, "power"))
    return schedule


@LR_SCHEDULES.register("exponential")
def exponential_schedule(
    *,
    end_ratio: float,
    units: ScheduleUnits,
) -> ParamScheduler:
    """Returns the decay ``end_ratio ** where``: 1 at the start, `end_ratio` at the end."""
    end = _ratio(end_ratio, "end_ratio")
    if end == 0:
        raise ConfigError("end_ratio must be > 0 for an exponential schedule")
    schedule = ExponentialParamScheduler(start_value=1.0, decay=end)
    return schedule


@LR_SCHEDULES.register("composite")
def composite_schedule(
    *,
    schedules: Sequence[Any],
    lengths: Sequence[float],
    interval_scaling: str | Sequence[str] = "rescaled",
    units: ScheduleUnits,
) -> ParamScheduler:
    """Returns `schedules` run one after another, each for its length (fvcore's composite).

    Args:
        schedules: schedules, or mappings ``{"name": ..., **kwargs}`` built with build_schedule.
        lengths: how long each runs; together they must cover training.
        interval_scaling: "rescaled" (each sees its own stretch as [0, 1)) or "fixed" (each sees
            the global progress), for all or per schedule.
    """
    parts = [as_schedule(s, f"schedules[{i}]") for i, s in enumerate(schedules)]
    fractions = units.fractions(lengths, "lengths")
    if len(parts) != len(fractions) or not parts:
        raise ConfigError(
            f"composite needs one length per schedule: {len(parts)} schedules, "
            f"{len(fractions)} lengths"
        )
    if abs(sum(fractions) - 1.0) > 1e-3:
        raise ConfigError(
            f"lengths={list(lengths)} cover {sum(fractions):.4g} of training; they must add up "
            "to all of it"
        )
    scaling = [interval_scaling] * len(parts) if isinstance(interval_scaling, str) else None
    scaling = scaling or list(interval_scaling)
    for s in scaling:
        if s not in ("rescaled", "fixed"):
            raise ConfigError(f"interval_scaling={s!r} must be 'rescaled' or 'fixed'")
    return CompositeParamScheduler(parts, lengths=fractions, interval_scaling=scaling)


@LR_SCHEDULES.register("delayed_start")
def delayed_start_schedule(
    *,
    hold_length: float,
    warmup_length: float = 0.0,
    warmup_factor: float = 0.001,
    schedule: Any = None,
    units: ScheduleUnits,
) -> ParamScheduler:
    """Returns a multiplier held at 0 for `hold_length`, warmed up linearly, then `schedule`.

    As a group schedule of `LRMultiplier` without `schedule`, the group follows the main
    schedule: ``group_schedules={"backbone": L(build_schedule)(name="delayed_start",
    hold_length=0.1, warmup_length=0.05)}`` holds the backbone at LR 0 for the first 10% of
    training (weights bit-identical), then warms it up over 5% into the main schedule.

    Args:
        hold_length: how long the multiplier is 0.
        schedule: the schedule to follow (a schedule or ``{"name": ..., **kwargs}``); None
            follows the main schedule of the LRMultiplier.
    """
    return DelayedStartSchedule(
        hold_length=units.fraction(hold_length, "hold_length"),
        warmup_length=units.fraction(warmup_length, "warmup_length"),
        warmup_factor=number(warmup_factor, "warmup_factor"),
        schedule=None if schedule is None else as_schedule(schedule, "schedule"),
    )


def _ratio(value: Any, arg: str) -> float:
    v = number(value, arg)
    if v < 0:
        raise ConfigError(f"{arg}={value} must be >= 0 (a ratio of each group's LR)")
    return v
