"""The entry path every tool shares: the argument parser, loading and checking the config
(`prepare_run`), setting a process up (`default_setup`), and one-line user errors."""

import argparse
import contextlib
import logging
import math
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from iopath.common.file_io import g_pathmgr
from omegaconf import DictConfig

from pgtrain.checkpoint.output_dir import check_output_dir
from pgtrain.config import LazyCall, LazyConfig
from pgtrain.data.preflight import check_datasets
from pgtrain.engine.run.settings import check_run_config
from pgtrain.errors import ConfigError, PgtrainError
from pgtrain.param_groups import build_param_groups
from pgtrain.utils import comm
from pgtrain.utils.env import per_rank_seed, seed_all_rng
from pgtrain.utils.logger import setup_logger

__all__ = [
    "add_grouping_arguments",
    "apply_grouping_arguments",
    "save_config",
    "default_argument_parser",
    "default_setup",
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


@dataclass
class RunRequest:
    """What a tool's command line asks for, loaded and checked by `prepare_run`.

    Attributes:
        cfg: the config with the command line's overrides and grouping flags applied, every
            ``train`` setting checked and filled in.
        notes: how the run was assembled (a flag that replaced the config's grouping); they end
            the param-group table (``build_run(notes=...)``).
        warnings: lines to log once logging is set up (the output folder's previous run moved).
    """

    cfg: DictConfig
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def prepare_run(
    args: argparse.Namespace,
    *,
    settings: bool = True,
    datasets: bool = False,
    new_run: bool = False,
) -> RunRequest:
    """The one entry path of the tools: loads ``args.config`` (its project's code included),
    applies ``args.opts`` and the grouping flags, checks every setting; all before any model,
    process or folder exists, so a mistake is one line.

    Args:
        args: the parsed command line (``config``, ``opts``; the grouping flags where the tool
            takes them; ``resume`` for `new_run`).
        settings: check every setting (`check_run_config`); False for a tool that reads only
            the datasets, so settings it does not use cannot refuse it.
        datasets: also check every COCO dataset of the config whole (`check_datasets`).
        new_run: the tool starts training: refuse an output folder that holds another run
            (``train.overwrite`` moves it aside instead: noted in ``warnings``).

    Raises:
        PgtrainError: anything that does not fit, named by its key or path.
    """
    cfg = LazyConfig.apply_overrides(LazyConfig.load(args.config), getattr(args, "opts", []))
    request = RunRequest(cfg, apply_grouping_arguments(cfg, args))
    if settings:
        check_run_config(cfg)
    if datasets:
        check_datasets(cfg)  # every COCO file whole, before the model, processes or folders
    if new_run:
        resume, overwrite = getattr(args, "resume", False), cfg.train.get("overwrite")
        note = check_output_dir(cfg.train.output_dir, resume=resume, overwrite=overwrite)
        request.warnings += [note] if note else []
    return request


def save_config(cfg: DictConfig) -> None:
    """Writes the run's full config to ``train.output_dir/config.yaml`` (main process only)."""
    output_dir = cfg.train.output_dir
    if comm.is_main_process() and output_dir:
        path = os.path.join(output_dir, "config.yaml")
        LazyConfig.save(cfg, path)
        logger.info("Full config saved to %s", path)


def default_setup(cfg: DictConfig, args: argparse.Namespace | None = None) -> None:
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


@contextlib.contextmanager
def user_errors_exit() -> Iterator[None]:
    """Turns errors a user caused into one line on stderr and exit status 2."""
    try:
        yield
    except (PgtrainError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
