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
from dataclasses import dataclass, field
from typing import Any

import torch
from omegaconf import DictConfig
from torch import nn

from pgtrain.checkpoint import Checkpointer, CheckpointReport
from pgtrain.checkpoint.output_dir import set_aside_old_numbering
from pgtrain.config import instantiate
from pgtrain.engine.hooks.unfreeze import UnfreezePlan
from pgtrain.engine.run.length import RunLength, needs_epoch_length
from pgtrain.engine.run.resume import checkpoint_position, convert_position
from pgtrain.engine.run.settings import check_run_config
from pgtrain.engine.strategy.device import resolve_device
from pgtrain.engine.strategy.strategy import Strategy
from pgtrain.errors import CheckpointError
from pgtrain.param_groups import ParamGroups, format_param_group_table
from pgtrain.param_groups.changes import changes_against_checkpoint
from pgtrain.solver import (
    BatchSizeLRScaling,
    build_lr_scheduler,
    build_optimizer,
    build_param_groups_from_config,
    effective_batch_size,
)
from pgtrain.utils import comm
from pgtrain.utils.checks import as_real

__all__ = [
    "Run",
    "build_run",
    "load_model",
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
        strategy: how the processes share the model (``train.strategy``), applied to
            `train_model` when built with ``parallel``; the trainer, hooks and evaluation ask it.
        unfreezing: the gradual unfreezing plan (``train.unfreeze``), already applied to the
            schedule (held groups at LR 0, then their warmup); None without stages.
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
    strategy: Strategy = field(default_factory=Strategy)
    unfreezing: UnfreezePlan | None = None

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
            lines += changes_against_checkpoint(self.groups, self.weights.contents, factor)
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
    strategy = Strategy.from_train(train)
    # Weights first, so a `fresh` rule knows which parameters the initial weights did not provide.
    model, checkpointer, weights = load_model(cfg, resume=resume, device=device, strategy=strategy)
    if weights.resumed:
        _check_resumable(weights)
    # After the weights (a checkpoint loads into the whole model), before the groups: FSDP
    # replaces the parameters by sharded ones of the same names, which the optimizer must hold.
    train_model = strategy.wrap(model) if parallel else model
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
    position = checkpoint_position(weights) if weights.resumed else None
    if with_loader or reference or dynamic or needs_epoch_length(cfg) or position:
        loader = instantiate(cfg.dataloader.train, "dataloader.train")
        batch = loader_effective_batch(loader, train.get("accumulation", 1))
        # Epochs become iterations here, before anything (the schedule) reads the length.
        length = RunLength.of(train, loader, batch)  # checks train.max_iter / train.epochs
        length.apply(train)
        if described := length.describe():
            logger.info("Run length: %s", described)
    if position and batch is not None and batch != position[1]:
        convert_position(weights, train, *position, batch)
    scheduler = build_lr_scheduler(cfg.get("lr_scheduler"), optimizer)
    if hasattr(scheduler, "describe_positions"):  # so a length change speaks of the units used
        scheduler.describe_positions(
            _schedule_units(cfg.lr_scheduler),
            train.get("iters_per_epoch"),
            in_epochs=train.get("epochs") is not None,
        )
    change = weights.extra.get("batch_change")  # (old, new, ...) when the resume moved
    unfreezing = UnfreezePlan.of(
        train.get("unfreeze"),
        optimizer,
        train.get("max_iter"),
        train.get("iters_per_epoch"),
        batch_change=change[:2] if change else None,
    )
    if unfreezing is not None:
        unfreezing.hold_schedules(scheduler)
        notes = [*notes, *unfreezing.describe(train.get("iters_per_epoch"))]
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
        strategy,
        unfreezing,
    )


def load_model(
    cfg: DictConfig,
    *,
    resume: bool = False,
    device: str | torch.device | None = None,
    strategy: Strategy | None = None,
) -> tuple[nn.Module, Checkpointer, CheckpointReport]:
    """The model of ``cfg.model`` on its device with its weights: the last checkpoint of
    ``train.output_dir`` when `resume` finds one, else ``train.init_checkpoint`` (the first step
    of `build_run`; evaluation and the visualizer need no more).

    Returns:
        The model, the run's checkpointer (it read the checkpoint once: the trainer's state and
        the RNG states wait in the report until the trainer exists), and the load's report.
    """
    train = cfg.get("train") or {}
    device = resolve_device(train.get("device", "auto")) if device is None else device
    strategy = strategy or Strategy.from_train(train)
    model = instantiate(cfg.model, "model").to(device)
    checkpointer = Checkpointer(
        model,
        train.get("output_dir", ""),
        keep_last=(train.get("checkpoint") or {}).get("keep_last"),
        save_to_disk=comm.is_main_process(),
        sharded=strategy.sharded_checkpoints,
    )
    weights = checkpointer.resume_or_load(
        train.get("init_checkpoint", ""),
        resume=resume,
        min_fraction=train.get("init_checkpoint_min_fraction", 0.5),
        restore_state=False,
        exclude=train.get("init_checkpoint_exclude") or (),
    )
    return model, checkpointer, weights


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
        record.base_lr = as_real(options.get("lr", optimizer_cfg.get("lr")))
    if record.base_weight_decay is None:
        default = optimizer_cfg.get("weight_decay")
        record.base_weight_decay = as_real(options.get("weight_decay", default))
    for group in groups:
        for name in group["param_names"]:
            decision = record.decisions[name]
            if math.isnan(decision.lr):
                decision.lr = float(group["lr"])
            if math.isnan(decision.weight_decay):
                decision.weight_decay = float(group.get("weight_decay", 0.0))
            if derive and record.base_lr:
                decision.lr_scale = decision.lr / record.base_lr


def _schedule_units(cfg: Any) -> list[str]:
    """How each schedule of an ``lr_scheduler`` config gives positions (``unit``): its main
    schedule's and its group schedules'; a schedule object is a function of the fraction."""
    schedules = [cfg.get("schedule"), *((cfg.get("group_schedules") or {}).values())]
    units = []
    for schedule in schedules:
        unit = schedule.get("unit", "fraction") if isinstance(schedule, DictConfig) else None
        units.append(unit if isinstance(unit, str) else "fraction")
    return units


def _check_resumable(weights: CheckpointReport) -> None:
    iteration = weights.extra.get("iteration")
    if isinstance(iteration, bool) or not isinstance(iteration, int):
        raise CheckpointError(
            f"{weights.path} holds weights but no training state, so --resume cannot continue "
            f"from it; start a new run from it with train.init_checkpoint={weights.path} and "
            "another train.output_dir"
        )


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
        set_aside_old_numbering(run.weights, run.cfg.train.output_dir, *change)
    return run.weights.extra["iteration"] + 1
