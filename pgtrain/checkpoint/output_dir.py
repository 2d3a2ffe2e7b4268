"""A run's folder: refusing to start over another run, and setting aside the files a resume at
another batch size would collide with."""

import logging
import os
import re
import shutil
import time

from pgtrain.checkpoint.report import CheckpointReport
from pgtrain.errors import ConfigError
from pgtrain.utils.file_io import is_local, output_path, write_text_atomically
from pgtrain.utils.suggest import listing

__all__ = ["check_output_dir", "set_aside_old_numbering"]

logger = logging.getLogger(__name__)


def set_aside_old_numbering(
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


# What a run writes into train.output_dir that another run must not overwrite or prune.
_RUN_FILE = re.compile(r"^(last_checkpoint|.+\.pth|.+\.dcp)$")


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
