"""build_run: the one place a config becomes the pieces of a run.

`tools/train_net.py`, `tools/inspect_param_groups.py`, `tools/plot_lr.py`, the benchmarks and the
tests all call it, so the groups a tool shows are the groups that train: the model gets its
initial weights (or the last checkpoint on resume) before the param groups are built, so a
``fresh`` rule sees exactly what training sees; batch-size LR scaling is the scheduler's factor,
so every view shows the scaled LRs.
"""

import copy
import logging
import math
import os
import re
import shutil
import time
from dataclasses import dataclass, field
from typing import Any

import torch
from omegaconf import DictConfig
from torch import nn

from pgtrain.checkpoint import Checkpointer, CheckpointReport
from pgtrain.config import instantiate
from pgtrain.engine.defaults import resolve_device
from pgtrain.engine.parallel import parallelize, sharded_checkpoints
from pgtrain.engine.run_length import RunLength, needs_epoch_length
from pgtrain.engine.settings import check_run_config
from pgtrain.errors import CheckpointError, ConfigError
from pgtrain.param_groups import ParamGroups, format_param_group_table
from pgtrain.param_groups.names import param_group_names
from pgtrain.param_groups.report import values_differ
from pgtrain.solver import (
    BatchSizeLRScaling,
    build_lr_scheduler,
    build_optimizer,
    build_param_groups_from_config,
    effective_batch_size,
)
from pgtrain.utils import comm
from pgtrain.utils.checks import is_real, is_whole
from pgtrain.utils.file_io import is_local, write_text_atomically
from pgtrain.utils.suggest import listing

__all__ = [
    "Run",
    "build_run",
    "changes_against_checkpoint",
    "loader_effective_batch",
    "resume_training_state",
]

logger = logging.getLogger(__name__)


@dataclass
class Run:
    """The pieces of a run that a config describes, built by `build_run`.

    Attributes:
        cfg: a copy of the config, with the run's objects bound in (the model in
            ``optimizer.params``, the optimizer in ``lr_scheduler``).
        model: the model on its device, with its initial weights (or the resumed ones); under
            FSDP it is sharded (its parameters are DTensors of the same names and shapes).
        checkpointer: the run's checkpointer (``train.output_dir``, ``train.checkpoint``), which
            loaded `weights`; register the trainer on it to save and resume training.
        weights: what loading the weights did (``weights.fresh``: the parameters they did not
            provide).
        groups: the param groups (the same dicts as ``optimizer.param_groups``) with the record
            behind them.
        optimizer: the optimizer over `groups`.
        scheduler: the LR scheduler, or None when the config has none.
        loader: the train loader, when it was asked for or needed for batch-size LR scaling.
        lr_scaling: the batch-size LR scaling (``train.lr_scaling``), or None when it is off.
        length: the run's length in iterations and epochs, when the loader was built; its values
            are written into ``cfg.train`` (``max_iter``, ``iters_per_epoch``, periods).
        notes: lines about how the run was assembled (e.g. a command-line flag that replaced the
            config's grouping); they end the param-group table.
        train_model: the module the trainer runs: `model` wrapped in DDP, or `model` itself
            (sharded under FSDP, or built without ``parallel``).
    """

    cfg: DictConfig
    model: nn.Module
    checkpointer: Checkpointer
    weights: CheckpointReport
    groups: ParamGroups
    optimizer: torch.optim.Optimizer
    scheduler: Any = None
    loader: Any = None
    lr_scaling: BatchSizeLRScaling | None = None
    length: RunLength | None = None
    notes: list[str] = field(default_factory=list)
    train_model: nn.Module | None = None

    def __post_init__(self) -> None:
        if self.train_model is None:
            self.train_model = self.model

    @property
    def effective_batch(self) -> int | None:
        """The batch one optimizer step sees, when the loader was built (from `length`)."""
        return self.length.batch if self.length else None

    @property
    def fresh(self) -> list[str]:
        """The parameters the initial weights did not provide (what ``fresh`` rules select)."""
        return list(self.weights.fresh)

    @property
    def iterations_done(self) -> int:
        """Iterations the resumed checkpoint had done (0 for a new run): the first iteration
        this run trains is the next one, ``iterations_done + 1`` as the console counts."""
        return self.weights.extra["iteration"] + 1 if self.weights.resumed else 0

    def table(self) -> str:
        """Returns the param-group table every run logs at its start (the LRs of the first
        iteration that runs included, after batch-size scaling; at a resume, what changed
        against the checkpoint), followed by the run's notes."""
        done = self.iterations_done
        lrs_at = getattr(self.scheduler, "lrs_at", None)
        first = lrs_at(done) if lrs_at is not None else None
        lines = [
            format_param_group_table(self.groups, self.model, first_iter=done + 1, first_lrs=first)
        ]
        if self.weights.resumed:
            factor = getattr(self.scheduler, "lr_factor", None)
            lines += changes_against_checkpoint(self.groups, self.weights, factor)
        lines += [f"note: {note}" for note in self.notes]
        return "\n".join(lines)

    def bases(self) -> dict[str, Any]:
        """The base LR and weight decay of the groups, for the trainer to save (so a resume
        can say what changed)."""
        record = self.groups.record
        return {"base_lr": record.base_lr, "base_weight_decay": record.base_weight_decay}


def build_run(
    cfg: DictConfig,
    *,
    resume: bool = False,
    device: str | torch.device | None = None,
    with_loader: bool = False,
    notes: list[str] | tuple[str, ...] = (),
    parallel: bool = False,
) -> Run:
    """Builds the model with its weights, the param groups, optimizer, LR scaling and scheduler.

    Args:
        cfg: a full config (``model``, ``optimizer``; ``train``, ``lr_scheduler`` and
            ``dataloader.train`` where present).
        resume: load the last checkpoint of ``train.output_dir`` if there is one (its recorded
            fresh parameters included), else ``train.init_checkpoint``.
        device: where the model goes; None: ``train.device``.
        with_loader: build the train loader even when LR scaling does not need it.
        notes: lines for the end of the param-group table.
        parallel: apply ``train.strategy`` (DDP or FSDP) before the groups are built; the
            module to train is ``run.train_model``. The groups are the same either way.

    Raises:
        PgtrainError: anything in the config that does not fit (named by its key).
    """
    cfg = copy.deepcopy(cfg)  # building binds the run's objects into the config: not the caller's
    if "train" in cfg:  # a tool checked it already; tests and benchmarks may call this directly
        check_run_config(cfg)  # typed values, every default filled in, before the model exists
    train = cfg.get("train") or {}
    device = resolve_device(train.get("device", "auto")) if device is None else device
    model = instantiate(cfg.model, "model").to(device)
    # Weights first, so a `fresh` rule knows which parameters the initial weights did not provide.
    # The run's one checkpointer: it reads the checkpoint once; the trainer's state and the RNG
    # states wait in `weights` until the trainer exists (`resume_training_state`).
    checkpointer = Checkpointer(
        model,
        train.get("output_dir", ""),
        keep_last=(train.get("checkpoint") or {}).get("keep_last"),
        save_to_disk=comm.is_main_process(),
        sharded=sharded_checkpoints(train),
    )
    weights = checkpointer.resume_or_load(
        train.get("init_checkpoint", ""),
        resume=resume,
        min_fraction=train.get("init_checkpoint_min_fraction", 0.5),
        restore_state=False,
        exclude=train.get("init_checkpoint_exclude") or (),
    )
    if weights.resumed:
        _check_resumable(weights)
    # After the weights (a checkpoint loads into the whole model), before the groups: FSDP
    # replaces the parameters by sharded ones of the same names, which the optimizer must hold.
    train_model = parallelize(model, train) if parallel else model
    # No initial weights at all (no checkpoint, nothing built pretrained): "fresh" is unknown,
    # and the builders say so next to any `fresh` rule.
    fresh = weights.fresh if weights.path or weights.fresh else None
    groups = build_param_groups_from_config(cfg.optimizer, model, fresh=fresh)
    optimizer = build_optimizer(cfg.optimizer, model, groups=groups)
    _complete_record(groups, cfg.optimizer)
    scaling = train.get("lr_scaling") or {}
    reference, dynamic = scaling.get("reference_batch"), scaling.get("dynamic")
    loader, batch, length = None, None, None
    # A resumed checkpoint that knows its batch: this run's batch decides where it continues.
    position = _checkpoint_position(weights) if weights.resumed else None
    if with_loader or reference or dynamic or needs_epoch_length(cfg) or position:
        loader = instantiate(cfg.dataloader.train, "dataloader.train")
        batch = loader_effective_batch(loader, train.get("accumulation", 1))
        # Epochs become iterations here, before anything (the schedule) reads the length.
        length = RunLength.of(train, loader, batch)  # checks train.max_iter / train.epochs
        length.apply(train)
        if described := length.describe():
            logger.info("Run length: %s", described)
    if position and batch is not None and batch != position[1]:
        _convert_position(weights, train, *position, batch)
    scheduler = build_lr_scheduler(cfg.get("lr_scheduler"), optimizer)
    if hasattr(scheduler, "describe_positions"):  # so a length change speaks of the units used
        scheduler.describe_positions(
            _schedule_units(cfg.lr_scheduler),
            train.get("iters_per_epoch"),
            in_epochs=train.get("epochs") is not None,
        )
    lr_scaling = None
    if reference or dynamic:
        # One factor on every group's LR (the scheduler's lr_factor): the groups keep the
        # config's LRs as their initial LRs, and the dynamic hook changes the same factor.
        lr_scaling = BatchSizeLRScaling(
            scheduler or optimizer, reference or batch, scaling.get("rule", "linear")
        )
        if lr_scaling.update(batch):
            logger.info("LR scaling: %s", lr_scaling.summary())
            notes = [*notes, f"batch-size LR scaling: {lr_scaling.summary()}"]
    return Run(
        cfg,
        model,
        checkpointer,
        weights,
        groups,
        optimizer,
        scheduler,
        loader,
        lr_scaling,
        length,
        list(notes),
        train_model,
    )


def loader_effective_batch(data_loader: Any, accumulation: int = 1) -> int:
    """Returns the batch one optimizer step sees with `data_loader`: its per-process batch x
    processes x accumulation steps."""
    sampler = getattr(data_loader, "batch_sampler", None)
    per_process = getattr(sampler, "batch_size", None) or getattr(data_loader, "batch_size", 1)
    return effective_batch_size(per_process, comm.get_world_size(), accumulation)


def _complete_record(groups: ParamGroups, optimizer_cfg: Any) -> None:
    """Gives the record of groups a builder made itself (no base values, no LR for the groups
    that took the optimizer's) the run's base LR and weight decay and every parameter's values,
    so the table and `explain` show the true base and scale."""
    record, options = groups.record, optimizer_cfg.get("params") or {}
    derive = record.base_lr is None
    if derive:
        record.base_lr = _number(options.get("lr", optimizer_cfg.get("lr")))
    if record.base_weight_decay is None:
        default = optimizer_cfg.get("weight_decay")
        record.base_weight_decay = _number(options.get("weight_decay", default))
    for group in groups:
        for name in group["param_names"]:
            decision = record.decisions[name]
            if math.isnan(decision.lr):
                decision.lr = float(group["lr"])
            if math.isnan(decision.weight_decay):
                decision.weight_decay = float(group.get("weight_decay", 0.0))
            if derive and record.base_lr:
                decision.lr_scale = decision.lr / record.base_lr


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _schedule_units(cfg: Any) -> list[str]:
    """How each schedule of an ``lr_scheduler`` config gives positions (``unit``): its main
    schedule's and its group schedules'; a schedule object is a function of the fraction."""
    schedules = [cfg.get("schedule"), *((cfg.get("group_schedules") or {}).values())]
    units = []
    for schedule in schedules:
        unit = schedule.get("unit", "fraction") if isinstance(schedule, DictConfig) else None
        units.append(unit if isinstance(unit, str) else "fraction")
    return units


def changes_against_checkpoint(
    groups: ParamGroups, weights: CheckpointReport, lr_factor: float | None = None
) -> list[str]:
    """Lines saying what a resumed run changed against its checkpoint: the base LR and weight
    decay, the batch-size LR factor (`lr_factor`, this run's), each group's LR and weight decay,
    new and removed groups, parameters in another group (or one line saying nothing changed)."""
    trainer = weights.contents.get("trainer")
    trainer = trainer if isinstance(trainer, dict) else {}
    saved = trainer.get("optimizer") if isinstance(trainer.get("optimizer"), dict) else {}
    hparams, placed = saved.get("group_hparams") or {}, saved.get("groups") or {}
    changes = _base_changes(groups.record, trainer.get("param_group_bases") or {})
    old_factor = _saved_lr_factor(trainer)
    if lr_factor is not None and old_factor is not None and values_differ(old_factor, lr_factor):
        changes.append(
            f"batch-size LR factor {old_factor:.4g} -> {lr_factor:.4g} (every group's LR "
            f"x{lr_factor / old_factor:.4g}; train.lr_scaling)"
        )
    if not hparams:  # an older checkpoint (torch's optimizer state): nothing to compare with
        return [f"changed against the checkpoint: {change}" for change in changes]
    ours = dict(zip(param_group_names(groups), groups, strict=True))
    for name, group in ours.items():
        if name not in hparams:
            changes.append(f"new group '{name}' ({len(group['params'])} tensors)")
        elif described := _group_change(hparams[name], group):
            changes.append(f"'{name}': {described}")
    changes += [f"group '{n}' is gone" for n in hparams if n not in ours]
    moved = [
        f"{n} ('{placed[n]}' -> '{g}')"
        for g, group in ours.items()
        for n in group["param_names"]
        if n in placed and placed[n] != g
    ]
    if moved:
        shown = listing(moved, 5)
        changes.append(f"{len(moved)} parameters in another group: {shown}")
    if not changes:
        return ["unchanged against the checkpoint: groups, LRs and weight decay"]
    return [f"changed against the checkpoint: {change}" for change in changes]


def _saved_lr_factor(trainer: dict[str, Any]) -> float | None:
    """The batch-size LR factor the checkpoint's schedule applied (in its hook state)."""
    for state in (trainer.get("hooks") or {}).values():
        if isinstance(state, dict) and isinstance(state.get("lr_factor"), int | float):
            return float(state["lr_factor"])
    return None


def _base_changes(record: Any, saved: dict[str, Any]) -> list[str]:
    out = []
    for key, label in (("base_lr", "base lr"), ("base_weight_decay", "base weight decay")):
        old, new = saved.get(key), getattr(record, key, None)
        if is_real(old) and is_real(new) and values_differ(old, new):
            out.append(f"{label} {old:.4g} -> {new:.4g}")
    return out


def _group_change(saved: dict[str, Any], group: dict[str, Any]) -> str:
    """``lr 0.05 -> 0.1, weight decay 0.0001 -> 0``: the group's LR (the one its schedule
    scales) and weight decay, the checkpoint's -> this run's; "" when both are the same."""
    parts = []
    for key, label in (("initial_lr", "lr"), ("weight_decay", "weight decay")):
        old = saved.get(key, saved.get("lr")) if key == "initial_lr" else saved.get(key)
        new = group.get(key, group.get("lr")) if key == "initial_lr" else group.get(key)
        if is_real(old) and is_real(new) and values_differ(old, new):
            parts.append(f"{label} {old:.4g} -> {float(new):.4g}")
    return ", ".join(parts)


def _check_resumable(weights: CheckpointReport) -> None:
    iteration = weights.extra.get("iteration")
    if isinstance(iteration, bool) or not isinstance(iteration, int):
        raise CheckpointError(
            f"{weights.path} holds weights but no training state, so --resume cannot continue "
            f"from it; start a new run from it with train.init_checkpoint={weights.path} and "
            "another train.output_dir"
        )


def _checkpoint_position(weights: CheckpointReport) -> tuple[int | None, int] | None:
    """The samples a resumed checkpoint has seen and its effective batch, as its trainer state
    records them; for an older checkpoint (no samples), the batch its dynamic batch-size LR
    scaling kept, if any; None when the batch is unknown."""
    trainer = weights.contents.get("trainer")
    trainer = trainer if isinstance(trainer, dict) else {}
    samples, batch = trainer.get("samples_seen"), trainer.get("batch")
    if is_whole(samples, at_least=0) and is_whole(batch, at_least=1):
        return samples, batch
    scaling = (trainer.get("hooks") or {}).get("BatchSizeLRScalingHook") or {}
    batch = scaling.get("batch") if isinstance(scaling, dict) else None
    return (None, batch) if is_whole(batch, at_least=1) else None


def _convert_position(
    weights: CheckpointReport, train: Any, samples: int | None, old: int, new: int
) -> None:
    """Moves a resumed checkpoint's position (trained at batch `old`) to this run's batch `new`:
    the same samples seen, so the data, the schedule's fraction and the epochs continue.

    Raises:
        CheckpointError: the samples seen are unknown or not a whole number of new batches.
        ConfigError: ``train.max_iter`` is given in iterations, whose meaning the batch changes.
    """
    path, last = weights.path, weights.extra["iteration"]
    if samples is None:
        raise CheckpointError(
            f"{path} does not record the samples it has seen (saved by an older pgtrain) and "
            f"trained at effective batch {old}, this run at {new}; resume at batch {old}, or "
            f"start a new run from its weights with train.init_checkpoint={path}"
        )
    if train.get("epochs") is None:
        raise ConfigError(
            f"train.max_iter={train.max_iter} counts optimizer steps, and this run's effective "
            f"batch ({new}) is not the checkpoint's ({old}), so it would mean other data: give "
            f"the length in epochs (train.max_iter=null train.epochs=...) to convert it, or "
            f"resume at batch {old}"
        )
    if samples % new:
        raise CheckpointError(
            f"{path} has seen {samples:,} samples (batch {old}), not a whole number of batches "
            f"of {new} (this run's effective batch); resume at a batch that divides it (such "
            f"as {old}), or train on at {old} to a checkpoint whose samples it divides"
        )
    moved = samples // new - 1
    logger.info(
        "Resuming with effective batch %d (the checkpoint's: %d): %s samples seen, iteration "
        "%d at batch %d -> iteration %d at batch %d",
        *(new, old, f"{samples:,}", last + 1, old, moved + 1, new),  # iterations done
    )
    weights.extra["iteration"] = weights.contents["iteration"] = moved
    weights.contents["trainer"].update(iteration=moved, batch=new)
    if "iterations_done" in weights.contents["trainer"]:
        weights.contents["trainer"]["iterations_done"] = moved + 1
    _move_hook_positions(weights.contents["trainer"].get("hooks") or {}, moved, old, new)
    # The files counted at the old batch are set aside when training starts (not by the tools
    # that only show this run): `resume_training_state`.
    weights.extra["batch_change"] = (old, new, moved + 1)


def _set_aside_old_numbering(
    weights: CheckpointReport, output_dir: str, old: int, new: int, done: int
) -> None:
    """After a resume at another batch this run counts iterations at its own batch, so the old
    run's numbered checkpoints, metrics.json and TensorBoard events (counted at batch `old`)
    would collide with the new numbers: they move, intact, into ``batch_<old>/``. The checkpoint
    resumed from stays, renamed to its number at the new batch (`done`), and ``last_checkpoint``
    points at it."""
    if not output_dir or not is_local(output_dir) or not os.path.isdir(output_dir):
        return
    resumed = os.path.basename(weights.path or "")
    stem, suffix = os.path.splitext(resumed)
    match = re.match(r"^(?P<prefix>.+)_\d{7}$", stem)
    aside = os.path.join(output_dir, f"batch_{old}")
    suffixes = (".pth", ".dcp")
    moving = [
        n for n in sorted(os.listdir(output_dir))
        if n == "metrics.json" or n.startswith("events.out.tfevents.")
        or (re.match(r"^.+_\d{7}(\.pth|\.dcp)$", n) and n != resumed)
    ]  # fmt: skip
    if os.path.exists(aside):
        aside = f"{aside}_{time.strftime('%Y%m%d-%H%M%S')}"
    if moving:
        os.makedirs(aside)
        for name in moving:
            shutil.move(os.path.join(output_dir, name), os.path.join(aside, name))
    here = os.path.abspath(os.path.dirname(weights.path or "")) == os.path.abspath(output_dir)
    if match and suffix in suffixes and here:
        renamed = f"{match['prefix']}_{done:07d}{suffix}"
        os.replace(os.path.join(output_dir, resumed), os.path.join(output_dir, renamed))
        write_text_atomically(os.path.join(output_dir, "last_checkpoint"), renamed)
        resumed = f"{resumed} (now {renamed})"
    logger.info(
        "Iterations are counted at batch %d from here on: %s resumed; the files counted at "
        "batch %d (%d: numbered checkpoints, metrics.json, TensorBoard events) moved into %s",
        *(new, resumed, old, len(moving), aside),
    )


def _move_hook_positions(hooks: dict[str, Any], moved: int, old: int, new: int) -> None:
    """Moves the positions in hook states (a schedule's iteration, dynamic LR scaling's batch)
    to the resumed iteration `moved` at batch `new`."""
    for state in hooks.values():
        if not isinstance(state, dict):
            continue
        # A schedule's position is the next iteration (saved after it stepped).
        for key in ("last_iter", "last_epoch"):
            if is_whole(state.get(key)):
                state[key] = moved + 1
        if state.get("batch") == old:  # dynamic batch-size LR scaling: this run's batch from now
            state["batch"] = new
        if is_whole(state.get("max_iter")):
            # The old run's length at this batch, for the length-change log; unknown if inexact.
            length, rest = divmod(state.pop("max_iter") * old, new)
            state.update({"max_iter": length} if not rest else {})


def resume_training_state(run: Run) -> int:
    """Restores the checkpointables registered on ``run.checkpointer`` (the trainer: optimizer,
    hooks) and the RNG states from the checkpoint the run resumed from, as read by `build_run`;
    returns the iteration to train next (0 when the run did not resume).

    Call it once the trainer is registered and its hooks exist, right before training, so the
    random streams continue exactly where the checkpoint left them.
    """
    if not run.weights.resumed:
        return 0
    run.checkpointer.restore_state(run.weights)
    change = run.weights.extra.get("batch_change")
    if change and comm.is_main_process():
        _set_aside_old_numbering(run.weights, run.cfg.train.output_dir, *change)
    return run.weights.extra["iteration"] + 1
