"""LRMultiplier: the one torch scheduler; each group's LR is its initial LR times a schedule.

A schedule (see `pgtrain.solver.schedules`) is a pure function of ``where = iter / max_iter``.
The adapter sets ``lr = initial_lr × multiplier(where) × lr_factor`` for every group, where a group
(found by its ``name``) may follow its own schedule and ``lr_factor`` is owned by
batch-size scaling, so the schedule never overwrites the scaling.
"""

import functools
import logging
import weakref
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from fvcore.common.param_scheduler import ParamScheduler
from torch.optim.lr_scheduler import LRScheduler

from pgtrain.errors import CheckpointError, ConfigError
from pgtrain.param_groups.names import param_group_names
from pgtrain.solver._checks import number, positive_int
from pgtrain.solver.schedules.param_schedulers import DelayedStartSchedule
from pgtrain.solver.schedules.registry import as_schedule
from pgtrain.utils.checks import is_whole
from pgtrain.utils.suggest import did_you_mean

__all__ = ["LRMultiplier", "group_lr_curves"]

logger = logging.getLogger(__name__)

Schedule = Callable[[float], float]


def _resolve_schedules(
    names: Sequence[str], schedule: Any, group_schedules: Mapping[str, Any] | None
) -> list[Schedule]:
    """Returns one schedule per group: its own from `group_schedules`, else the main one."""
    main = as_schedule(schedule, "schedule")
    if isinstance(main, DelayedStartSchedule) and main.schedule is None:
        raise ConfigError(
            "schedule: a delayed_start without schedule= follows the main schedule, so it cannot "
            "be the main schedule; use it in group_schedules or give it schedule="
        )
    own: dict[str, Schedule] = {}
    for key, value in (group_schedules or {}).items():
        if key not in names:
            hint = did_you_mean(key, names)
            raise ConfigError(
                f"group_schedules: no param group named '{key}'{hint}{' ' if hint else '. '}"
                f"Groups: {', '.join(names)}"
            )
        s = as_schedule(value, f"group_schedules.{key}")
        own[key] = s.with_main(main) if isinstance(s, DelayedStartSchedule) else s
    return [own.get(name, main) for name in names]


def _where(iteration: int, max_iter: int) -> float:
    # After the last step the scheduler sits at max_iter, which no iteration trains with; it
    # keeps the last iteration's LR instead of asking a schedule for where = 1.
    return min(max(iteration, 0), max_iter - 1) / max_iter


def group_lr_curves(
    base_lrs: Mapping[str, float],
    schedule: Any,
    max_iter: int,
    *,
    group_schedules: Mapping[str, Any] | None = None,
) -> dict[str, list[float]]:
    """Returns every group's LR at every iteration ``0 .. max_iter - 1``, without training.

    Args:
        base_lrs: each group's initial LR by group name.
        schedule: the main schedule (as for `LRMultiplier`).
        max_iter: the length of training.
        group_schedules: schedules of single groups by name (as for `LRMultiplier`).
    """
    max_iter = positive_int(max_iter, "max_iter")
    names = list(base_lrs)
    schedules = _resolve_schedules(names, schedule, group_schedules)
    wheres = [_where(i, max_iter) for i in range(max_iter)]
    return {
        name: [float(base_lrs[name]) * s(w) for w in wheres]
        for name, s in zip(names, schedules, strict=True)
    }


class LRMultiplier(LRScheduler):
    """Sets each group's LR to its initial LR × its schedule's multiplier × `lr_factor`.

    Step it once per iteration, after ``optimizer.step()``. Works with any torch optimizer.
    Groups are identified by name (`param_group_names`). A group's initial LR is its
    ``initial_lr`` if a scheduler set one before, else its ``lr``; the scheduler writes
    ``initial_lr`` and ``lr_factor`` into every group, so reports show ``initial_lr ×
    lr_factor``, the LR the schedule scales.

    On `load_state_dict` (and after ``optimizer.load_state_dict``) the iteration comes from the
    checkpoint but the LRs are this run's: the current config decides, so a resume with a changed
    grouping or new LRs trains with the new ones from the resumed iteration on.

    Args:
        optimizer: the optimizer whose groups to schedule.
        schedule: the main schedule (a ParamScheduler, or ``{"name": ..., **kwargs}``).
        max_iter: the length of training; ``where = iter / max_iter``.
        group_schedules: schedules of single groups by group name, e.g. ``{"backbone":
            build_schedule(name="delayed_start", hold_length=0.1, warmup_length=0.05)}``.
        last_iter: the last finished iteration; -1 starts at iteration 0.
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        schedule: ParamScheduler | Mapping[str, Any],
        max_iter: int,
        *,
        group_schedules: Mapping[str, ParamScheduler | Mapping[str, Any]] | None = None,
        last_iter: int = -1,
    ) -> None:
        self.max_iter = positive_int(max_iter, "max_iter")
        self.lr_factor = 1.0
        # How positions are given (see `describe_positions`): fractions unless told otherwise.
        self._units: tuple[str, ...] = ("fraction",)
        self._iters_per_epoch: int | None = None
        self._in_epochs = False
        self.group_names = param_group_names(optimizer.param_groups)
        self._schedules = _resolve_schedules(self.group_names, schedule, group_schedules)
        for group in optimizer.param_groups:
            if "initial_lr" not in group:
                lr = group["lr"]
                # A tensor LR (capturable / fused optimizers) is updated in place: copy it.
                group["initial_lr"] = lr.clone() if isinstance(lr, torch.Tensor) else lr
            group["lr_factor"] = self.lr_factor
        super().__init__(optimizer, last_epoch=last_iter)
        # A plain function holding a weak reference: the optimizer must not keep this alive,
        # and a deep copy of the optimizer must not copy the scheduler.
        optimizer.register_load_state_dict_post_hook(
            functools.partial(_reapply_after_optimizer_load, weakref.ref(self))
        )

    @property
    def iter(self) -> int:
        """The iteration whose LRs are set (the next one to train)."""
        return self.last_epoch

    def get_lr(self) -> list[float]:
        """Returns every group's LR at the current iteration."""
        return self.lrs_at(self.last_epoch)

    def _get_closed_form_lr(self) -> list[float]:
        return self.lrs_at(self.last_epoch)

    def lrs_at(self, iteration: int) -> list[float]:
        """Returns every group's LR at `iteration`, in group order, without changing anything."""
        where = _where(iteration, self.max_iter)
        return [
            float(base) * s(where) * self.lr_factor
            for base, s in zip(self.base_lrs, self._schedules, strict=True)
        ]

    def lr_curves(self) -> dict[str, list[float]]:
        """Returns every group's LR at every iteration of training by group name (for plots)."""
        rows = [self.lrs_at(i) for i in range(self.max_iter)]
        return {name: [row[g] for row in rows] for g, name in enumerate(self.group_names)}

    def hold(self, name: str, until: int, warmup: int = 0, warmup_factor: float = 0.001) -> None:
        """Holds group `name` at LR 0 for the iterations before `until`, then ramps its LR
        linearly from `warmup_factor` x its schedule to its schedule over `warmup` iterations
        (gradual unfreezing: the group enters training at `until` with a warmup of its own).

        Raises:
            ConfigError: an unknown group, or a group that already follows a ``delayed_start``.
        """
        if name not in self.group_names:
            raise ConfigError(
                f"no param group named '{name}'{did_you_mean(name, self.group_names)}"
            )
        i = self.group_names.index(name)
        if isinstance(self._schedules[i], DelayedStartSchedule):
            raise ConfigError(
                f"lr_scheduler.group_schedules.{name} is a delayed_start and train.unfreeze holds "
                "the same group: use one of them"
            )
        self._schedules[i] = DelayedStartSchedule(
            hold_length=until / self.max_iter,
            warmup_length=warmup / self.max_iter,
            warmup_factor=warmup_factor,
            schedule=self._schedules[i],
        )
        self._apply()

    def set_lr_factor(self, factor: float) -> None:
        """Sets the extra factor on every group's LR (batch-size scaling) and applies it now."""
        factor = number(factor, "lr_factor")
        if factor <= 0:
            raise ConfigError(f"lr_factor={factor} must be > 0")
        self.lr_factor = factor
        self._apply()

    def _apply(self) -> None:
        """Writes the current iteration's LRs (and this run's initial LRs) into the optimizer."""
        groups = self.optimizer.param_groups
        for group, base, lr in zip(
            groups, self.base_lrs, self.lrs_at(self.last_epoch), strict=True
        ):
            group["initial_lr"] = base
            group["lr_factor"] = self.lr_factor  # so every view shows the LR the schedule scales
            if isinstance(group["lr"], torch.Tensor):
                group["lr"].fill_(lr)
            else:
                group["lr"] = lr
        self._last_lr = [g["lr"].clone() if torch.is_tensor(g["lr"]) else g["lr"] for g in groups]

    def state_dict(self) -> dict[str, Any]:
        """Returns the iteration, LR factor and (for information) the groups, as plain values."""
        return {
            "last_iter": self.last_epoch,
            "lr_factor": self.lr_factor,
            "max_iter": self.max_iter,
            "group_names": list(self.group_names),
            "base_lrs": [float(b) for b in self.base_lrs],
            # What this schedule gives the next iteration, for a resume that changes the length.
            "next_lrs": [float(lr) for lr in self.lrs_at(self.last_epoch)],
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Resumes at the saved iteration, with this run's groups, LRs and batch-size factor."""
        last = state_dict.get("last_iter", state_dict.get("last_epoch"))
        if not is_whole(last):
            raise CheckpointError(
                "the lr scheduler state has no iteration ('last_iter'); it was not saved by "
                "LRMultiplier.state_dict or a torch scheduler"
            )
        self.last_epoch = last
        # The factor belongs to batch-size scaling, which restores its own state; this run's
        # config decides it, as it decides the LRs.
        saved_factor = float(state_dict.get("lr_factor", 1.0))
        if saved_factor != self.lr_factor:
            logger.info(
                "LR scheduler resumed with this run's batch-size LR factor %.6g (the checkpoint's "
                "was %.6g)",
                self.lr_factor,
                saved_factor,
            )
        self._apply()
        self._log_length_change(state_dict)
        saved = state_dict.get("group_names")
        if saved is not None and list(saved) != self.group_names:
            logger.info(
                "LR scheduler resumed after iteration %d with this run's param groups %s "
                "(the checkpoint had %s) and their current LRs",
                last,
                self.group_names,
                list(saved),
            )

    def describe_positions(
        self, units: Sequence[str], iters_per_epoch: int | None = None, in_epochs: bool = False
    ) -> None:
        """Tells the scheduler how its schedules give positions (``fraction``, ``iter`` or
        ``epoch``, one per schedule) and whether the run's length is in epochs, so a resume that
        changes the length speaks of the units used and warns only when positions move."""
        self._units = tuple(units)
        self._iters_per_epoch = iters_per_epoch
        self._in_epochs = bool(in_epochs and iters_per_epoch)

    def _log_length_change(self, state_dict: dict[str, Any]) -> None:
        """Says when a resume trains for another length than the checkpoint's run: a warning
        when schedule positions are fractions of the length (they move with it), with the next
        iteration's schedule multiplier before and after; one info line when they are given in
        iterations or epochs (they stay). Changed LRs are the param-group table's to show."""
        saved_max = state_dict.get("max_iter")
        if not is_whole(saved_max) or saved_max == self.max_iter:
            return
        lengths = self._lengths(self.last_epoch, saved_max)
        units = self._units
        if "fraction" not in units:
            logger.info(
                "%s. The schedule's positions are given in %s, so they stay where they were",
                lengths,
                " and ".join(
                    dict.fromkeys("iterations" if u == "iter" else "epochs" for u in units)
                ),
            )
            return
        first, second = ("epochs", "epoch") if self._in_epochs else ("iterations", "iter")
        other, other_unit = ("iterations", "iter") if first == "epochs" else ("epochs", "epoch")
        logger.warning(
            "%s. Schedule positions given as fractions of the length (unit='fraction') move with "
            "it%s. To keep milestones and warmup where they were, give them in %s "
            "(unit='%s') or %s (unit='%s')",
            lengths,
            self._multiplier_change(state_dict),
            first,
            second,
            other,
            other_unit,
        )

    def _lengths(self, done: int, saved_max: int) -> str:
        """``Resumed after 10 iterations with max_iter 40; the checkpoint's run had 20``, in
        epochs when the run's length is given in epochs."""
        if not self._in_epochs:
            return (
                f"Resumed after {done:,} iterations with max_iter {self.max_iter:,}; the "
                f"checkpoint's run had {saved_max:,} iterations"
            )
        per = self._iters_per_epoch
        return (
            f"Resumed after {done / per:.3g} epochs ({done:,} iterations) with train.epochs "
            f"{self.max_iter / per:.3g} ({self.max_iter:,} iterations); the checkpoint's run had "
            f"{saved_max / per:.3g} epochs ({saved_max:,} iterations)"
        )

    def _multiplier_change(self, state_dict: dict[str, Any]) -> str:
        """``: the next iteration's schedule multiplier, the checkpoint's -> this run's: default
        x1 -> x0.1``; the LRs themselves are left out (a changed base LR is no length effect)."""
        names = state_dict.get("group_names") or ()
        bases, lrs = state_dict.get("base_lrs") or (), state_dict.get("next_lrs") or ()
        factor = float(state_dict.get("lr_factor", 1.0)) or 1.0
        theirs = {n: lr / (b * factor) for n, b, lr in zip(names, bases, lrs, strict=False) if b}
        ours = {
            n: lr / (float(b) * self.lr_factor)
            for n, b, lr in zip(
                self.group_names, self.base_lrs, self.lrs_at(self.last_epoch), strict=True
            )
            if float(b)
        }
        changes = {n: f"x{theirs[n]:.4g} -> x{m:.4g}" for n, m in ours.items() if n in theirs}
        if not changes:
            return ""
        if len(set(changes.values())) == 1:  # the same for every group
            shown = next(iter(changes.values()))
        else:
            shown = ", ".join(f"{n} {c}" for n, c in changes.items())
        return (
            f" (the next iteration's schedule multiplier, the checkpoint's -> this run's: {shown})"
        )


def _reapply_after_optimizer_load(
    ref: "weakref.ReferenceType[LRMultiplier]", optimizer: torch.optim.Optimizer
) -> None:
    # optimizer.load_state_dict restores the checkpoint's lr and initial_lr; the config decides.
    scheduler = ref()
    if scheduler is not None and scheduler.optimizer is optimizer:
        scheduler._apply()
