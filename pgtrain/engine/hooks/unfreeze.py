"""Gradual unfreezing: param groups that start training at declared points of the run.

``train.unfreeze.stages`` declares them; for instance the pretrained part of a detector held for
the first epoch, then trained with a warmup of its own::

    train.unfreeze.stages = [dict(groups=["default"], at="1ep", warmup=50)]

Before its stage a group computes no gradients (its parameters do not require them), its batch
norm layers stay in eval mode (``train.unfreeze.norm_eval``: their running statistics do not
move), its LR is 0, and its weights and optimizer state are untouched. At the stage's first
iteration the group enters training: its LR ramps linearly over ``warmup`` iterations into its
schedule, and the param-group table is logged again with an audit (how many parameters entered
training; every trainable parameter in exactly one group, none of a waiting group trainable).
Which groups train is a function of the iteration alone, so every rank switches at the same
iteration and a run resumed inside a stage or past a boundary trains as the unbroken run.

Unlike a ``delayed_start`` group schedule (LR 0 while the gradients are still computed), the held
group costs no backward pass, and its momentum buffers and batch norm statistics stay out of the
hold.

Strategies: one process; DDP (DDP registers the parameters that need gradients when it wraps the
model, so `Strategy.rewrap` wraps it anew at each change); FSDP2 (each shard's ``requires_grad``
is switched; FSDP2 reduces only the gradients that exist).
"""

import fnmatch
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from pgtrain.config.schema import setting
from pgtrain.engine.loop.hook_base import HookBase
from pgtrain.engine.run.length import iterations_of, period_problem
from pgtrain.errors import ConfigError
from pgtrain.param_groups import audit_param_groups, format_param_group_table
from pgtrain.param_groups.names import param_group_names
from pgtrain.solver.optimizer_modes import has_modes
from pgtrain.utils.checks import is_real
from pgtrain.utils.suggest import did_you_mean

__all__ = ["GradualUnfreezing", "Stage", "UnfreezePlan", "UnfreezeSettings"]

logger = logging.getLogger(__name__)

_KEY = "train.unfreeze.stages"
_STAGE_KEYS = ("groups", "at", "warmup", "warmup_factor")
_STAGE = "{groups: [group names or globs], at: iterations or '1ep', warmup: iterations or '0.5ep'}"


def _check_stages(stages: Any) -> str | None:
    """Checks every stage's keys and values (one line naming the stage's key)."""
    if not isinstance(stages, Sequence) or isinstance(stages, str):
        return f"a list of stages, each {_STAGE}"
    for i, stage in enumerate(stages):
        key = f"{_KEY}.{i}"
        if not isinstance(stage, Mapping):
            raise ConfigError(f"{key}: {stage!r} must be a stage, {_STAGE}")
        for name in stage:
            if name not in _STAGE_KEYS:
                spaced = " (on the command line, a space after each colon: {at: 10})"
                raise ConfigError(
                    f"{key}.{name}: unknown key{did_you_mean(str(name), _STAGE_KEYS)}; a stage "
                    f"has {', '.join(_STAGE_KEYS)}{spaced if ':' in str(name) else ''}"
                )
        for name in ("groups", "at"):
            if name not in stage:
                raise ConfigError(f"{key}: the stage has no '{name}'; a stage is {_STAGE}")
        groups = stage["groups"]
        groups = [groups] if isinstance(groups, str) else groups
        if not (
            isinstance(groups, Sequence)
            and groups
            and all(isinstance(g, str) and g for g in groups)
        ):
            raise ConfigError(
                f"{key}.groups: {stage['groups']!r} must be a param group name or glob, or a "
                "non-empty list of them"
            )
        for name, least in (("at", 1), ("warmup", 0)):
            problem = period_problem(stage.get(name, 0), least)
            if problem:
                raise ConfigError(f"{key}.{name}: {stage[name]!r} must be {problem}")
        factor = stage.get("warmup_factor", 0.001)
        if not is_real(factor) or not 0 <= factor <= 1:
            raise ConfigError(f"{key}.warmup_factor: {factor!r} must be a number from 0 to 1")
    return None


@dataclass
class UnfreezeSettings:
    """``train.unfreeze``: gradual unfreezing, param groups that start training later."""

    stages: list[dict[str, Any]] = setting(
        [],
        "stages, each {groups: [names or globs], at: when they start training (iterations, or "
        "epochs '1ep'), warmup: their LR's linear ramp after that (iterations or epochs; 0), "
        "warmup_factor: the ramp's start as a ratio of the LR (0.001)}; before its stage a group "
        "computes no gradients",
        check=_check_stages,
        expects=f"a list of stages, each {_STAGE}",
    )
    norm_eval: bool = setting(
        True,
        "batch norm layers whose weights are in a group that waits for its stage stay in eval "
        "mode (their running statistics do not move)",
    )


@dataclass(frozen=True)
class Stage:
    """One stage, in iterations.

    Attributes:
        index: its place in ``train.unfreeze.stages``.
        groups: the param groups that enter training, in optimizer order.
        at: the first iteration (from 0) that trains them; they are held before it.
        warmup: iterations over which their LR ramps from ``warmup_factor`` x to 1 x schedule.
        warmup_factor: the ramp's start.
    """

    index: int
    groups: tuple[str, ...]
    at: int
    warmup: int = 0
    warmup_factor: float = 0.001


class UnfreezePlan:
    """The stages of ``train.unfreeze`` resolved against the run's groups and length.

    Args:
        stages: the stages, as `Stage` objects.
        group_names: the optimizer's groups by name, in order.
    """

    def __init__(self, stages: Sequence[Stage], group_names: Sequence[str]) -> None:
        self.stages = sorted(stages, key=lambda s: (s.at, s.index))
        self.group_names = list(group_names)
        self.lr_held = False  # set by `hold_schedules`: LR 0 before each stage

    @classmethod
    def of(
        cls,
        settings: Mapping[str, Any] | None,
        optimizer: torch.optim.Optimizer,
        max_iter: int,
        iters_per_epoch: int | None,
        batch_change: tuple[int, int] | None = None,
    ) -> "UnfreezePlan | None":
        """The plan of ``train.unfreeze`` (checked by `UnfreezeSettings`) for `optimizer`'s
        groups and a run of `max_iter` iterations; None when it declares no stages.

        Args:
            batch_change: (the checkpoint's effective batch, this run's) when a resume changed
                it: a stage's start in iterations would then mean other samples.

        Raises:
            ConfigError: a name or glob that matches no group, a group in two stages, a stage
                that starts after the run ends, stages that leave no group training at first, a
                start in iterations across a batch change, a schedule-free optimizer.
        """
        given = list((settings or {}).get("stages") or [])
        if not given:
            return None
        if has_modes(optimizer):
            raise ConfigError(
                f"train.unfreeze.stages: {type(optimizer).__name__} keeps a step count per group "
                "that runs on while the group is held, so the group would skip the optimizer's "
                "own warmup when it enters training; train every group from the start with a "
                "schedule-free optimizer, or use another optimizer"
            )
        names = param_group_names(optimizer.param_groups)
        owner: dict[str, int] = {}
        stages = []
        for i, raw in enumerate(given):
            key = f"unfreeze.stages.{i}"
            patterns = [raw["groups"]] if isinstance(raw["groups"], str) else list(raw["groups"])
            chosen = []
            for pattern in patterns:
                matched = [n for n in names if _matches(n, pattern)]
                if not matched:
                    raise ConfigError(
                        f"train.{key}.groups: '{pattern}' matches no param group"
                        f"{did_you_mean(pattern, names)} (groups: {', '.join(names)})"
                    )
                chosen += [n for n in matched if n not in chosen]
            for name in chosen:
                if name in owner:
                    raise ConfigError(
                        f"train.{key}.groups: group '{name}' is in stage {owner[name]} already; "
                        "a group enters training once"
                    )
                owner[name] = i
            if batch_change and not isinstance(raw["at"], str):
                old, new = batch_change
                same = ""
                if iters_per_epoch:  # the checkpoint's samples at the stage, in epochs
                    same = f" (at: '{raw['at'] * old / (iters_per_epoch * new):.4g}ep' is close)"
                raise ConfigError(
                    f"train.{key}.at={raw['at']} counts iterations, and this run's effective "
                    f"batch ({new}) is not the checkpoint's ({old}), so the stage would start "
                    f"at other data (a group already training could be held again): give it in "
                    f"epochs{same}, or resume at batch {old}"
                )
            at = iterations_of(raw["at"], f"{key}.at", iters_per_epoch)
            if at >= max_iter:
                raise ConfigError(
                    f"train.{key}.at={raw['at']!r} is iteration {at + 1:,} and the run has "
                    f"{max_iter:,}: the groups would never train; start the stage earlier"
                )
            warmup = iterations_of(raw.get("warmup", 0), f"{key}.warmup", iters_per_epoch)
            ordered = tuple(n for n in names if n in chosen)
            factor = float(raw.get("warmup_factor", 0.001))
            stages.append(Stage(i, ordered, int(at), int(warmup), factor))
        if len(owner) == len(names):
            first = min(s.at for s in stages)
            raise ConfigError(
                f"train.unfreeze.stages hold every param group, so nothing trains for the first "
                f"{first:,} iterations; leave the groups that train from the start out of the "
                "stages"
            )
        return cls(stages, names)

    def waiting(self, iteration: int) -> list[str]:
        """The groups that do not train at `iteration` (their stage starts later)."""
        held = {g for s in self.stages if s.at > iteration for g in s.groups}
        return [n for n in self.group_names if n in held]

    def starting(self, iteration: int) -> list[Stage]:
        """The stages whose groups enter training at `iteration`."""
        return [s for s in self.stages if s.at == iteration]

    def hold_schedules(self, scheduler: Any) -> None:
        """Gives each stage's groups LR 0 before the stage and its warmup after it (through the
        scheduler's `LRMultiplier.hold`); without such a scheduler the groups keep their LR
        (they have no gradients to apply it to).

        Raises:
            ConfigError: a warmup without a scheduler that can hold groups.
        """
        self.lr_held = hasattr(scheduler, "hold")
        if not self.lr_held:
            for s in self.stages:
                if s.warmup:
                    raise ConfigError(
                        f"train.unfreeze.stages.{s.index}.warmup needs an lr_scheduler that "
                        "schedules groups by name (LRMultiplier); give warmup=0 or add one"
                    )
            return
        for s in self.stages:
            for name in s.groups:
                scheduler.hold(name, s.at, s.warmup, s.warmup_factor)

    def summary(self) -> str:
        """The stages in one line: ``group 'default' until iteration 151 (warmup 50)``."""
        parts = []
        for s in self.stages:
            warmup = f" (warmup {s.warmup:,})" if s.warmup else ""
            parts.append(f"{_names(s.groups)} until iteration {s.at + 1:,}{warmup}")
        return "; ".join(parts)

    def describe(self, iters_per_epoch: int | None = None) -> list[str]:
        """One line per stage, for the param-group table's notes."""
        lines = []
        for s in self.stages:
            when = f"iteration {s.at + 1:,}"
            if iters_per_epoch:
                when += f" (epoch {s.at / iters_per_epoch:.3g})"
            its = "its" if len(s.groups) == 1 else "their"
            ramp = f", {its} LR warming up over {_iterations(s.warmup)}" if s.warmup else ""
            lines.append(
                f"train.unfreeze: {_names(s.groups)} {'trains' if len(s.groups) == 1 else 'train'} "
                f"from {when}{ramp}; before that no gradients{', LR 0' if self.lr_held else ''}"
            )
        return lines


class GradualUnfreezing(HookBase):
    """Applies an `UnfreezePlan`: before training, the groups that wait for a stage stop
    requiring gradients (and their batch norm layers stay in eval mode); at each stage's first
    iteration they enter training, and the table and the audit are logged.

    Args:
        plan: the run's plan (``run.unfreezing``).
        groups: the run's param groups (``run.groups``), for the table.
        scheduler: the LR scheduler (its ``lrs_at`` gives the table's LR column); may be None.
        norm_eval: keep the batch norm layers of waiting groups in eval mode.
    """

    def __init__(
        self, plan: UnfreezePlan, groups: Any, scheduler: Any = None, norm_eval: bool = True
    ) -> None:
        self.plan = plan
        self.groups = groups
        self.scheduler = scheduler
        self.norm_eval = norm_eval
        self._trainable: set[str] = set()

    def before_train(self) -> None:
        # The groups of stages starting at the first iteration are held here and enter in
        # before_step, so a run resumed right at a boundary logs it as the unbroken run does.
        start = self.trainer.start_iter
        waiting = self.plan.waiting(start - 1)
        self._trainable = set(self.plan.group_names) - set(waiting)
        changed = self._set_trainable(waiting, False)
        if changed[0]:
            logger.info(
                "Gradual unfreezing: %s %s for %s stage (%s tensors, %s parameters compute no "
                "gradients until then)",
                _names(waiting),
                "waits" if len(waiting) == 1 else "wait",
                "its" if len(waiting) == 1 else "their",
                f"{changed[0]:,}",
                f"{changed[1]:,}",
            )
            self._rewrap()
        self._audit(start, entered=None)

    def before_step(self) -> None:
        it = self.trainer.iter
        stages = self.plan.starting(it)
        if not stages:
            return
        self._audit(it - 1, entered=None)  # nothing switched the held groups behind the plan
        entering = [g for s in stages for g in s.groups]
        tensors, numel = self._set_trainable(entering, True)
        self._trainable |= set(entering)
        for s in stages:
            its = "its" if len(s.groups) == 1 else "their"
            ramp = f"; {its} LR warms up over {_iterations(s.warmup)}" if s.warmup else ""
            logger.info(
                "Gradual unfreezing, stage %d of %d at iteration %d: %s %s training%s",
                self.plan.stages.index(s) + 1,
                len(self.plan.stages),
                it + 1,
                _names(s.groups),
                "enters" if len(s.groups) == 1 else "enter",
                ramp,
            )
        self._rewrap()
        first_lrs = self.scheduler.lrs_at(it) if hasattr(self.scheduler, "lrs_at") else None
        model = self.trainer.strategy.unwrap(self.trainer.model)
        table = format_param_group_table(self.groups, model, first_iter=it + 1, first_lrs=first_lrs)
        logger.info("Parameter groups at iteration %d:\n%s", it + 1, table)
        self._audit(it, entered=(tensors, numel))

    # ----- helpers -----

    def _params(self, names: Sequence[str]) -> list[tuple[str, nn.Parameter]]:
        """The parameters of the groups `names`, by their names in the groups."""
        wanted = set(names)
        return [
            (pname, p)
            for group in self.trainer.optimizer.param_groups
            if group.get("name") in wanted
            for pname, p in zip(group["param_names"], group["params"], strict=True)
        ]

    def _set_trainable(self, names: Sequence[str], trainable: bool) -> tuple[int, int]:
        """Sets ``requires_grad`` of the groups' parameters; moves their batch norm layers in or
        out of `Trainer.eval_modules`; returns the tensors and parameters changed."""
        params = self._params(names)
        changed = [p for _, p in params if p.requires_grad != trainable]
        for p in changed:
            p.requires_grad_(trainable)
        if self.norm_eval:
            norms = self._norm_layers({n for n, _ in params})
            kept = self.trainer.eval_modules
            if trainable:
                self.trainer.eval_modules = [m for m in kept if all(m is not n for n in norms)]
            else:
                kept += [n for n in norms if all(n is not m for m in kept)]
        return len(changed), sum(p.numel() for p in changed)

    def _norm_layers(self, names: set[str]) -> list[nn.Module]:
        """Batch norm layers (running statistics) of the parameters `names`: those whose own
        parameters are all among them, and those without parameters (``affine=False``) whose
        closest ancestor with parameters has all of them among `names`."""
        model = self.trainer.strategy.unwrap(self.trainer.model)
        modules = dict(model.named_modules())
        found = []
        for prefix, module in modules.items():
            if not isinstance(module, nn.modules.batchnorm._NormBase):
                continue
            owner, params = prefix, []
            while True:
                params = [
                    f"{owner}.{n}" if owner else n for n, _ in modules[owner].named_parameters()
                ]
                if params or not owner:
                    break
                owner = owner.rpartition(".")[0]
            if params and all(n in names for n in params):
                found.append(module)
        return found

    def _rewrap(self) -> None:
        self.trainer.model = self.trainer.strategy.rewrap(self.trainer.model)

    def _audit(self, iteration: int, entered: tuple[int, int] | None) -> None:
        """Checks every trainable parameter is in exactly one group (`audit_param_groups`) and
        that exactly the parameters of the groups in training require gradients; logs the
        counts when a stage began.

        Raises:
            ConfigError: a parameter outside the plan (e.g. a hook set ``requires_grad``).
        """
        model = self.trainer.strategy.unwrap(self.trainer.model)
        plain = [
            {"name": g.get("name"), "params": list(g["params"])}
            for g in self.trainer.optimizer.param_groups
        ]
        audit_param_groups(model, plain, builder="gradual unfreezing")
        training = [0, 0]
        staged = {g for s in self.plan.stages for g in s.groups}
        for group in self.trainer.optimizer.param_groups:
            should = group.get("name") in self._trainable
            for pname, p in zip(group["param_names"], group["params"], strict=True):
                if group.get("name") in staged and p.requires_grad != should:
                    state = "requires" if p.requires_grad else "does not require"
                    raise ConfigError(
                        f"gradual unfreezing: {pname} of group '{group.get('name')}' {state} "
                        f"gradients at iteration {iteration + 1}, against train.unfreeze.stages; "
                        "leave requires_grad of grouped parameters to the stages"
                    )
                if p.requires_grad:
                    training[0] += 1
                    training[1] += p.numel()
        if entered is None:
            return
        waiting = self.plan.waiting(iteration)
        logger.info(
            "Audit at iteration %d: %s tensors (%s parameters) entered training; %s tensors "
            "(%s parameters) train, each in exactly one group; %s",
            iteration + 1,
            f"{entered[0]:,}",
            f"{entered[1]:,}",
            f"{training[0]:,}",
            f"{training[1]:,}",
            f"{_names(waiting)} still wait" if waiting else "no group waits",
        )


def _matches(name: str, pattern: str) -> bool:
    """Whether a group name is meant by `pattern`: the name itself; the name without its
    weight-decay suffix ('layer_1' means 'layer_1[wd=0]' and 'layer_1[wd=0.05]', not
    'layer_10'); or a glob ('layer_*'). Names hold brackets, which a glob reads as a set of
    characters, so a name is compared as written first."""
    return name == pattern or name.split("[", 1)[0] == pattern or fnmatch.fnmatchcase(name, pattern)


def _names(groups: Sequence[str]) -> str:
    shown = ", ".join(f"'{g}'" for g in groups)
    return f"group {shown}" if len(groups) == 1 else f"groups {shown}"


def _iterations(n: int) -> str:
    return f"{n:,} iteration{'' if n == 1 else 's'}"
