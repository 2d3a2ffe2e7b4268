"""build_run: the one place a config becomes the pieces of a run.

`tools/train_net.py`, `tools/inspect_param_groups.py`, `tools/plot_lr.py`, the benchmarks and the
tests all call it, so the groups a tool shows are the groups that train: the model gets its
initial weights (or the last checkpoint on resume) before the param groups are built, so a
``fresh`` rule sees exactly what training sees; batch-size LR scaling is applied before the
schedule takes the groups' initial LRs.
"""

import copy
import logging
from dataclasses import dataclass, field
from typing import Any

import torch
from omegaconf import DictConfig
from torch import nn

from pgtrain.checkpoint import Checkpointer, CheckpointReport
from pgtrain.config import instantiate
from pgtrain.engine.defaults import resolve_device, scale_lrs_to_batch
from pgtrain.errors import CheckpointError
from pgtrain.param_groups import ParamGroups, format_param_group_table
from pgtrain.solver import build_lr_scheduler, build_optimizer, build_param_groups_from_config

__all__ = ["Run", "build_run", "resume_training_state"]

logger = logging.getLogger(__name__)


@dataclass
class Run:
    """The pieces of a run that a config describes, built by `build_run`.

    Attributes:
        cfg: a copy of the config, with the run's objects bound in (the model in
            ``optimizer.params``, the optimizer in ``lr_scheduler``).
        model: the model on its device, with its initial weights (or the resumed ones).
        weights: what loading the weights did (``weights.fresh``: the parameters they did not
            provide).
        groups: the param groups (the same dicts as ``optimizer.param_groups``) with the plan
            behind them.
        optimizer: the optimizer over `groups`.
        scheduler: the LR scheduler, or None when the config has none.
        loader: the train loader, when it was asked for or needed for batch-size LR scaling.
        effective_batch: the batch one optimizer step sees, when the loader was built.
        notes: lines about how the run was assembled (e.g. a command-line flag that replaced the
            config's grouping); they end the param-group table.
    """

    cfg: DictConfig
    model: nn.Module
    weights: CheckpointReport
    groups: ParamGroups
    optimizer: torch.optim.Optimizer
    scheduler: Any = None
    loader: Any = None
    effective_batch: int | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def fresh(self) -> list[str]:
        """The parameters the initial weights did not provide (what ``fresh`` rules select)."""
        return list(self.weights.fresh)

    def table(self) -> str:
        """Returns the param-group table every run logs at its start (the LRs of the first step
        included, after batch-size scaling), followed by the run's notes."""
        lines = [format_param_group_table(self.groups, self.model)]
        lines += [f"note: {note}" for note in self.notes]
        return "\n".join(lines)


def build_run(
    cfg: DictConfig,
    *,
    resume: bool = False,
    device: str | torch.device | None = None,
    with_loader: bool = False,
    notes: list[str] | tuple[str, ...] = (),
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

    Raises:
        PgtrainError: anything in the config that does not fit (named by its key).
    """
    cfg = copy.deepcopy(cfg)  # building binds the run's objects into the config: not the caller's
    train = cfg.get("train") or {}
    device = resolve_device(train.get("device", "auto")) if device is None else device
    model = instantiate(cfg.model, "model").to(device)
    # Weights first, so a `fresh` rule knows which parameters the initial weights did not provide.
    weights = Checkpointer(model, train.get("output_dir", "")).resume_or_load(
        train.get("init_checkpoint", ""),
        resume=resume,
        min_fraction=train.get("init_checkpoint_min_fraction", 0.5),
    )
    # No initial weights at all (no checkpoint, nothing built pretrained): "fresh" is unknown,
    # and the builders say so next to any `fresh` rule.
    fresh = weights.fresh if weights.path or weights.fresh else None
    groups = build_param_groups_from_config(cfg.optimizer, model, fresh=fresh)
    optimizer = build_optimizer(cfg.optimizer, model, groups=groups)
    scaling = train.get("lr_scaling") or {}
    loader, batch = None, None
    if with_loader or scaling.get("reference_batch") or scaling.get("dynamic"):
        loader = instantiate(cfg.dataloader.train, "dataloader.train")
        # Once, before the scheduler takes the groups' initial LRs.
        batch = scale_lrs_to_batch(
            optimizer,
            loader,
            accumulation=train.get("accumulation", 1),
            reference_batch=scaling.get("reference_batch"),
            rule=scaling.get("rule", "linear"),
        )
    scheduler = build_lr_scheduler(cfg.get("lr_scheduler"), optimizer)
    return Run(cfg, model, weights, groups, optimizer, scheduler, loader, batch, list(notes))


def resume_training_state(checkpointer: Checkpointer) -> int:
    """Restores the checkpointables (the trainer: optimizer, hooks) and RNG states from the last
    checkpoint, if there is one; returns the iteration to train next (0 without a checkpoint).

    Raises:
        CheckpointError: The last checkpoint holds weights only (no iteration to continue from).
    """
    if not checkpointer.has_checkpoint():
        return 0
    report = checkpointer.resume_or_load("", resume=True)
    iteration = report.extra.get("iteration")
    if isinstance(iteration, bool) or not isinstance(iteration, int):
        raise CheckpointError(
            f"{report.path} holds weights but no training state, so --resume cannot continue "
            f"from it; start a new run from it with train.init_checkpoint={report.path} and "
            "another train.output_dir"
        )
    return iteration + 1
