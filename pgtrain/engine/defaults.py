"""What every training script shares: the argument parser, run setup, and one-line user errors."""

import argparse
import contextlib
import logging
import math
import os
import sys
from collections.abc import Iterator
from typing import Any

import torch
from iopath.common.file_io import g_pathmgr
from omegaconf import DictConfig

from pgtrain.config import LazyCall, LazyConfig
from pgtrain.errors import ConfigError, PgtrainError
from pgtrain.param_groups import build_param_groups
from pgtrain.solver.lr_scaling import effective_batch_size, scale_optimizer_lrs
from pgtrain.utils import comm
from pgtrain.utils.env import per_rank_seed, seed_all_rng
from pgtrain.utils.logger import setup_logger
from pgtrain.utils.writers import ConsoleWriter, EventWriter, JSONWriter, TensorboardWriter

__all__ = [
    "add_grouping_arguments",
    "apply_grouping_arguments",
    "default_argument_parser",
    "default_writers",
    "default_setup",
    "resolve_device",
    "scale_lrs_to_batch",
    "user_errors_exit",
]

logger = logging.getLogger(__name__)


def default_argument_parser(description: str = "pgtrain training") -> argparse.ArgumentParser:
    """Returns the parser of train_net.py: config, resume, eval-only, processes, overrides."""
    parser = argparse.ArgumentParser(
        description=description,
        epilog="Overrides: key.path=value, e.g. train.max_iter=100 optimizer.lr=0.02",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", required=True, metavar="FILE", help="a .py or .yaml config")
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue from the last checkpoint in train.output_dir",
    )
    parser.add_argument("--eval-only", action="store_true", help="evaluate and exit")
    parser.add_argument(
        "--num-gpus", type=int, default=0, help="processes per machine, one per GPU"
    )
    parser.add_argument(
        "--num-processes",
        type=int,
        default=1,
        help="processes per machine on the CPU (gloo), when --num-gpus is 0",
    )
    parser.add_argument("--num-machines", type=int, default=1)
    parser.add_argument("--machine-rank", type=int, default=0, help="this machine's rank")
    parser.add_argument(
        "--dist-url", default="auto", help="tcp://HOST:PORT of machine 0 for multi-machine runs"
    )
    add_grouping_arguments(parser)
    parser.add_argument("opts", nargs="*", metavar="key=value", help="config overrides")
    return parser


def add_grouping_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds the flags that choose a param grouping; every tool that builds a run takes them."""
    parser.add_argument(
        "--head-lr-multiplier",
        type=float,
        metavar="X",
        help="the Mask R-CNN fine-tuning recipe's grouping instead of the config's: box and mask "
        "predictors at X times the base LR (optimizer.lr), the rest of the detector at 5x, the "
        "backbone at 1x (replaces optimizer.params, rules included)",
    )


def apply_grouping_arguments(cfg: DictConfig, args: argparse.Namespace) -> list[str]:
    """Applies the flags of `add_grouping_arguments` to `cfg`; returns notes on what changed.

    ``--head-lr-multiplier X`` replaces ``optimizer.params`` by the ``head_multiplier`` builder
    with the optimizer's own LR and weight decay, so the predictors end at exactly X times the
    base LR whatever rules the config had (a config rule would otherwise multiply again).
    """
    multiplier = getattr(args, "head_lr_multiplier", None)
    if multiplier is None:
        return []
    if not math.isfinite(multiplier) or multiplier <= 0:
        raise ConfigError(f"--head-lr-multiplier must be a positive number, got {multiplier}")
    old = cfg.optimizer.get("params")
    replaced = _describe_grouping(old)
    lr, wd = "${..lr}", "${..weight_decay}" if "weight_decay" in cfg.optimizer else 0.0
    cfg.optimizer.params = LazyCall(build_param_groups)(
        builder="head_multiplier", lr=lr, weight_decay=wd, head_lr_multiplier=multiplier
    )
    return [
        f"--head-lr-multiplier {multiplier:g} replaced the config's grouping ({replaced}) by the "
        f"head-multiplier grouping: box and mask predictors at {multiplier:g}x the base LR, the "
        "rest of the detector at 5x, the backbone at 1x"
    ]


def _describe_grouping(params: Any) -> str:
    """Says in a few words what an ``optimizer.params`` node builds."""
    if params is None:
        return "optimizer.params=None: one group"
    builder = params.get("builder") or str(params.get("_target_", "?")).rpartition(".")[2]
    rules = params.get("rules") or []
    return f"builder '{builder}'" + (f" with {len(rules)} rule(s)" if rules else "")


def resolve_device(device: str) -> torch.device:
    """Turns ``train.device`` ("auto", "cpu", "cuda") into this process's device."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda":
        if not torch.cuda.is_available():
            raise PgtrainError("train.device=cuda but CUDA is not available; use train.device=cpu")
        return torch.device("cuda", comm.get_local_rank())
    return torch.device(device)


def default_setup(cfg: DictConfig, args: argparse.Namespace) -> None:
    """Creates the output folder, sets up logging, saves config.yaml, seeds RNGs per rank."""
    output_dir = cfg.train.output_dir
    rank = comm.get_rank()
    if rank == 0 and output_dir:
        g_pathmgr.mkdirs(output_dir)
    comm.synchronize()
    setup_logger(output_dir, rank=rank)
    logger.info(
        "Rank %d of %d; torch %s; command line: %s",
        rank,
        comm.get_world_size(),
        torch.__version__,
        " ".join(sys.argv),
    )
    if rank == 0 and output_dir:
        path = os.path.join(output_dir, "config.yaml")
        LazyConfig.save(cfg, path)
        logger.info("Full config saved to %s", path)
    # Different seeds per rank (different augmentations), reproducible from train.seed; a
    # negative or None seed is drawn once and shared, so the run can still be repeated from it.
    seed = cfg.train.get("seed", 0)
    if seed is None or seed < 0:
        seed = comm.shared_random_seed()
    seed_all_rng(per_rank_seed(seed, rank))


def default_writers(output_dir: str, max_iter: int) -> list[EventWriter]:
    """Console, JSON-lines (``metrics.json``) and TensorBoard writers on the main process only."""
    if not comm.is_main_process():
        return []
    return [
        ConsoleWriter(max_iter),
        JSONWriter(os.path.join(output_dir, "metrics.json")),
        TensorboardWriter(output_dir),
    ]


def scale_lrs_to_batch(
    optimizer: torch.optim.Optimizer,
    data_loader: Any,
    *,
    accumulation: int,
    reference_batch: int | None,
    rule: str = "linear",
) -> int:
    """Scales every group's LR from `reference_batch` to this run's effective batch, once.

    The effective batch is the loader's per-process batch x processes x accumulation steps. Call
    it after building the optimizer and before the LR scheduler; None leaves the LRs as they are.
    Returns the effective batch.
    """
    sampler = getattr(data_loader, "batch_sampler", None)
    per_process = getattr(sampler, "batch_size", None) or getattr(data_loader, "batch_size", 1)
    batch = effective_batch_size(per_process, comm.get_world_size(), accumulation)
    if reference_batch:
        logger.info("LR scaling: %s", scale_optimizer_lrs(optimizer, reference_batch, batch, rule))
    return batch


@contextlib.contextmanager
def user_errors_exit() -> Iterator[None]:
    """Turns errors a user caused into one line on stderr and exit status 2."""
    try:
        yield
    except (PgtrainError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except Exception as e:
        message = _child_user_error(e)
        if message is None:
            raise
        print(f"error: {message}", file=sys.stderr)
        sys.exit(2)


def _child_user_error(error: Exception) -> Any:
    """Returns the one-line message of a user error raised in a spawned process, else None."""
    text = str(error).strip().splitlines()
    for line in reversed(text):
        for name in ("ConfigError", "RegistryError", "CheckpointError", "PgtrainError"):
            if line.startswith(f"pgtrain.errors.{name}: ") or line.startswith(f"{name}: "):
                return line.split(": ", 1)[1]
    return None
