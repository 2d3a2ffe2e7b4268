"""What every training script shares: the argument parser, run setup, and one-line user errors."""

import argparse
import contextlib
import logging
import math
import os
import re
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
from iopath.common.file_io import g_pathmgr
from omegaconf import DictConfig

from pgtrain.config import LazyCall, LazyConfig
from pgtrain.config.schema import setting
from pgtrain.engine.launch import default_timeout
from pgtrain.errors import ConfigError, PgtrainError
from pgtrain.param_groups import build_param_groups
from pgtrain.utils import comm
from pgtrain.utils.checks import is_real
from pgtrain.utils.env import per_rank_seed, seed_all_rng
from pgtrain.utils.file_io import is_local, output_path
from pgtrain.utils.logger import setup_logger
from pgtrain.utils.suggest import listing
from pgtrain.utils.writers import ConsoleWriter, EventWriter, JSONWriter, TensorboardWriter

__all__ = [
    "RunSettings",
    "add_grouping_arguments",
    "apply_grouping_arguments",
    "check_output_dir",
    "device_check",
    "collective_timeout",
    "save_config",
    "stall_timeout",
    "default_argument_parser",
    "default_writers",
    "default_setup",
    "resolve_device",
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


_DEVICE = re.compile(r"^(auto|(cpu|cuda)(:(0|[1-9]\d*))?)$")
# What a run writes into train.output_dir that another run must not overwrite or prune.
_RUN_FILE = re.compile(r"^(last_checkpoint|.+\.pth|.+\.dcp)$")


_DEVICES = "one of 'auto', 'cpu', 'cuda' or 'cuda:N'"


def device_check(value: str) -> str | None:
    """The check of a device setting (``train.device``, ``train.ema.device``)."""
    return None if _DEVICE.match(value) else _DEVICES


@dataclass
class RunSettings:
    """Where a run writes, what it starts from, where it runs and how it is seeded."""

    output_dir: str = setting("./output", "the run's folder: checkpoints, logs, config.yaml")
    overwrite: bool = setting(
        False,
        "start a new run in a folder that holds another run's checkpoints, moving them into "
        "output_dir/replaced_<time>/ first (else that is refused: continue it with --resume)",
    )
    init_checkpoint: str = setting(
        "", "weights to start from (a path or URL); the parameters it lacks are reported fresh"
    )
    init_checkpoint_exclude: list[str] = setting(
        [], "globs of init_checkpoint's keys to leave out (their parameters count as fresh)"
    )
    init_checkpoint_min_fraction: float = setting(
        0.5,
        "initial weights that provide less than this fraction of the parameters warn loudly "
        "(none at all is an error)",
        ge=0,
        le=1,
    )
    device: str = setting(
        "auto",
        "where the model runs: 'auto' (CUDA when available), 'cpu', 'cuda'",
        check=device_check,
        expects=_DEVICES,
    )
    seed: int | None = setting(
        0, "each rank seeds with seed + rank; a negative seed draws one", null="draw one"
    )


def check_output_dir(output_dir: str, *, resume: bool, overwrite: bool = False) -> str | None:
    """Refuses to start a new run in a folder that holds another run's checkpoints.

    A run never overwrites or prunes what it did not write: without `resume`, a folder with a
    ``last_checkpoint`` or ``.pth`` files is an error, unless `overwrite` (``train.overwrite``)
    moves the folder's files into ``replaced_<time>/`` inside it first.

    Returns:
        A line for the log when files were moved, else None.

    Raises:
        ConfigError: The folder is empty, under a file, or holds another run.
    """
    if not output_dir:
        raise ConfigError(
            "train.output_dir is empty; set it to the folder for this run's checkpoints and logs"
        )
    if not is_local(output_dir):
        return None
    output_path(output_dir, "train.output_dir", folder=True)  # created, or one line why not
    held = sorted(n for n in os.listdir(output_dir) if _RUN_FILE.match(n))
    if resume or not held:
        return None
    if not overwrite:
        raise ConfigError(
            f"train.output_dir={output_dir} already holds a run ({listing(held, 4)}); continue "
            "it with --resume, choose another "
            "train.output_dir, or set train.overwrite=True to move its files aside"
        )
    archive = os.path.join(output_dir, f"replaced_{time.strftime('%Y%m%d-%H%M%S')}")
    moved = [n for n in os.listdir(output_dir) if not n.startswith("replaced_")]
    os.makedirs(archive)
    for name in moved:
        os.replace(os.path.join(output_dir, name), os.path.join(archive, name))
    return f"train.overwrite=True: moved the previous run's {len(moved)} files into {archive}"


_MAX_STALL_S = 60.0


def collective_timeout(cfg: DictConfig, backend: str) -> timedelta:
    """How long a collective waits for the other ranks: ``train.dist_timeout_s`` or the default.

    Raises:
        ConfigError: The value is not a positive number of seconds.
    """
    value = cfg.get("train", {}).get("dist_timeout_s")
    if value is None:
        return default_timeout(backend)
    if not is_real(value, above=0):
        raise ConfigError(f"train.dist_timeout_s={value!r} must be a positive number of seconds")
    return timedelta(seconds=float(value))


def stall_timeout(cfg: DictConfig) -> float:
    """Seconds of silence after which `StallWatchdog` names a rank: at most half the collective
    timeout, so the stall is reported before a collective would fail, and at most 60 s."""
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    return min(_MAX_STALL_S, collective_timeout(cfg, backend).total_seconds() / 2)


def save_config(cfg: DictConfig) -> None:
    """Writes the run's full config to ``train.output_dir/config.yaml`` (main process only)."""
    output_dir = cfg.train.output_dir
    if comm.is_main_process() and output_dir:
        path = os.path.join(output_dir, "config.yaml")
        LazyConfig.save(cfg, path)
        logger.info("Full config saved to %s", path)


def resolve_device(device: str) -> torch.device:
    """Turns ``train.device`` ("auto", "cpu", "cuda") into this process's device."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise PgtrainError(f"train.device={device} but CUDA is not available; use train.device=cpu")
    if device == "cuda":
        return torch.device("cuda", comm.get_local_rank())
    if device.startswith("cuda:") and comm.get_world_size() > 1:
        raise PgtrainError(
            f"train.device={device} would put all {comm.get_world_size()} processes on one GPU; "
            "use train.device=cuda (each process takes the GPU of its local rank)"
        )
    return torch.device(device)


def default_setup(cfg: DictConfig, args: argparse.Namespace) -> None:
    """Creates the output folder, sets up logging, seeds RNGs per rank.

    The config is saved by `save_config` once the run is built, so a run that fails to start
    (e.g. a refused resume) leaves the previous ``config.yaml`` as it was.
    """
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
    # Different seeds per rank (different augmentations), reproducible from train.seed; a
    # negative or None seed is drawn once and shared, so the run can still be repeated from it.
    seed = cfg.train.get("seed", 0)
    if seed is None or seed < 0:
        seed = comm.shared_random_seed()
    seed_all_rng(per_rank_seed(seed, rank))


def default_writers(
    output_dir: str, max_iter: int, iters_per_epoch: int | None = None, batch: int | None = None
) -> list[EventWriter]:
    """Console, JSON-lines (``metrics.json``) and TensorBoard writers on the main process only;
    with `iters_per_epoch` the console and metrics.json show the epoch next to the iteration,
    with the effective `batch` metrics.json the samples trained."""
    if not comm.is_main_process():
        return []
    metrics = os.path.join(output_dir, "metrics.json")
    return [
        ConsoleWriter(max_iter, iters_per_epoch=iters_per_epoch),
        JSONWriter(metrics, iters_per_epoch=iters_per_epoch, batch=batch),
        TensorboardWriter(output_dir),
    ]


@contextlib.contextmanager
def user_errors_exit() -> Iterator[None]:
    """Turns errors a user caused into one line on stderr and exit status 2."""
    try:
        yield
    except (PgtrainError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
