"""What every training script shares: the argument parser, run setup, and one-line user errors."""

import argparse
import contextlib
import logging
import os
import sys
from collections.abc import Iterator
from typing import Any

import torch
from iopath.common.file_io import g_pathmgr
from omegaconf import DictConfig

from pgtrain.config import LazyConfig
from pgtrain.errors import PgtrainError
from pgtrain.solver.lr_scaling import effective_batch_size, scale_optimizer_lrs
from pgtrain.utils import comm
from pgtrain.utils.env import per_rank_seed, seed_all_rng
from pgtrain.utils.logger import setup_logger
from pgtrain.utils.writers import ConsoleWriter, EventWriter, JSONWriter, TensorboardWriter

__all__ = [
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
    parser.add_argument("opts", nargs="*", metavar="key=value", help="config overrides")
    return parser


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
