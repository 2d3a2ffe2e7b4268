"""Evaluating a run: its model (and EMA) during training, and given weights with ``--eval-only``."""

import copy
import logging
import os
from typing import Any

from omegaconf import DictConfig
from torch import nn

from pgtrain.checkpoint import Checkpointer
from pgtrain.config import instantiate
from pgtrain.engine.run.build import load_model
from pgtrain.errors import ConfigError
from pgtrain.evaluation import inference_on_dataset
from pgtrain.utils import comm
from pgtrain.utils.suggest import listing

__all__ = [
    "eval_output_dir",
    "eval_weights",
    "evaluate",
    "evaluate_weights",
    "model_with_weights",
    "test_metrics",
]

logger = logging.getLogger(__name__)

_EVAL_MARKER = "weights.txt"  # names the weights whose results an eval_<stem>/ folder holds


def test_metrics(cfg: DictConfig, model: nn.Module, *, lockstep: bool = False) -> dict[str, Any]:
    """Evaluates `model` on ``dataloader.test`` with ``dataloader.evaluator``; returns the metrics
    ({} when the config has no evaluation). `lockstep`: ``run.strategy.lockstep_eval``."""
    if "test" not in cfg.dataloader or "evaluator" not in cfg.dataloader:
        return {}
    results = inference_on_dataset(
        model,
        instantiate(cfg.dataloader.test, "dataloader.test"),
        instantiate(cfg.dataloader.evaluator, "dataloader.evaluator"),
        lockstep=lockstep,
    )
    logger.info("Evaluation: %s", results)
    return results


def evaluate(
    cfg: DictConfig, model: nn.Module, ema: Any = None, which: str = "model", lockstep: bool = False
) -> dict[str, Any]:
    """Evaluates the model, the EMA of its weights (metrics under ``ema/``), or both
    (``train.ema.evaluate``)."""
    results = {}
    if which in ("model", "both") or ema is None:
        results.update(test_metrics(cfg, model, lockstep=lockstep))
    if ema is not None and which in ("ema", "both"):
        ema_results = test_metrics(cfg, ema.model, lockstep=lockstep)
        results.update({f"ema/{k}": v for k, v in ema_results.items()})
    return results


def eval_weights(cfg: DictConfig, resume: bool) -> str:
    """Returns the weights --eval-only evaluates: the run's last checkpoint when resuming and
    there is one, else ``train.init_checkpoint``; an untrained model is refused."""
    output_dir = cfg.train.output_dir
    last = Checkpointer(nn.Module(), output_dir).get_checkpoint_file() if resume else ""
    weights = last or cfg.train.get("init_checkpoint") or ""
    if not weights:
        where = f"'{output_dir}' has no checkpoint" if resume else "--resume was not given"
        raise ConfigError(
            f"--eval-only: no trained weights to evaluate ({where} and train.init_checkpoint is "
            "empty); pass --resume with train.output_dir=<a run folder with a checkpoint>, or "
            "train.init_checkpoint=<weights file>"
        )
    return weights


def eval_output_dir(cfg: DictConfig, weights: str) -> str:
    """Returns where --eval-only's evaluator writes: ``<its output_dir>/eval_<weights stem>/``,
    so a run's own results are never overwritten ("" when it writes no files); refuses a folder
    that holds the results of other weights."""
    evaluator = cfg.dataloader.get("evaluator") if "dataloader" in cfg else None
    if evaluator is None or not evaluator.get("output_dir"):
        return ""
    stem = os.path.splitext(os.path.basename(weights.rstrip("/")))[0]
    folder = os.path.join(evaluator.output_dir, f"eval_{stem}")
    marker = os.path.join(folder, _EVAL_MARKER)
    if os.path.exists(marker):
        with open(marker) as f:
            previous = f.read().strip()
        if previous != os.path.abspath(weights):
            raise ConfigError(
                f"--eval-only: '{folder}' holds the results of {previous}, not of {weights}; "
                "pass train.output_dir=<another folder> to keep both"
            )
    return folder


def require_whole_fit(report: Any, weights: str, who: str = "", so: str = "") -> None:
    """Refuses `weights` that leave part of the model at its initialization (a tensor missing,
    or of another shape): evaluating or predicting with them would use random layers.

    Args:
        report: `model_with_weights`' loading report.
        weights: the file, for the message.
        who: what the message starts with (``--eval-only: ``).
        so: what the mismatch would do, after the count (``, so part of it would be ...``).
    """
    unfit = [*report.missing, *(key for key, _, _ in report.shape_mismatched)]
    if unfit:
        raise ConfigError(
            f"{who}{weights} does not fit the model whole ({len(unfit)} of its tensors "
            f"missing or of another shape: {listing(unfit, 3)}){so}; give the model.* settings "
            "the weights were trained with"
        )


def model_with_weights(cfg: DictConfig, weights: str) -> tuple[nn.Module, Any]:
    """The model of ``cfg.model`` on ``train.device`` with exactly `weights` loaded (all of the
    file: ``train.init_checkpoint_exclude`` does not apply; "" keeps the initialization), as
    `build_run` loads a run's weights (`load_model`); returns it with the load's report. No
    optimizer or loader is built."""
    cfg = copy.deepcopy(cfg)  # the caller's config keeps its own weights
    cfg.train.init_checkpoint, cfg.train.init_checkpoint_exclude = weights, []
    model, _, report = load_model(cfg)
    return model, report


def evaluate_weights(cfg: DictConfig, resume: bool) -> dict[str, Any]:
    """``--eval-only``: the model with the weights `eval_weights` names, evaluated; the
    evaluator writes into `eval_output_dir`.

    Raises:
        ConfigError: the weights do not fit the model whole (keys missing or of another shape):
            the metrics would be those of a partly initialized model.
    """
    weights = eval_weights(cfg, resume)
    folder = eval_output_dir(cfg, weights)
    cfg = copy.deepcopy(cfg)  # the caller's config keeps its own output_dir
    if folder:
        cfg.dataloader.evaluator.output_dir = folder
    model, report = model_with_weights(cfg, weights)
    require_whole_fit(
        report, weights, "--eval-only: ", ", so part of it would be evaluated at its initialization"
    )
    if folder and comm.is_main_process():
        os.makedirs(folder, exist_ok=True)
        with open(os.path.join(folder, _EVAL_MARKER), "w") as f:
            f.write(os.path.abspath(weights) + "\n")
    return test_metrics(cfg, model)
