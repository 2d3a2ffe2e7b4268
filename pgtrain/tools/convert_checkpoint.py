"""Convert a sharded checkpoint (an FSDP run's ``.dcp`` folder) into one ``.pth`` file.

    python tools/convert_checkpoint.py output/vit_fsdp/model_final.dcp model_final.pth
    python tools/convert_checkpoint.py output/vit_fsdp/model_final.dcp weights.pth --weights-only

Runs in one process on the CPU, with no process group: the folder's shards (written by any number
of processes) are read into whole tensors. The file holds what the folder held (weights, the
name-keyed optimizer state, iteration, hook and RNG states), so a single-file run resumes from it
(`--resume` with it as the output folder's last checkpoint) or starts from it
(``train.init_checkpoint``). ``--weights-only`` keeps only ``{"model": weights}`` for inference.
Both load with ``torch.load(path, weights_only=True)``.
"""

import argparse
import os

import torch
from iopath.common.file_io import PathManager

from pgtrain.checkpoint.file_io import write_atomically
from pgtrain.checkpoint.sharded import is_sharded_checkpoint, read_sharded
from pgtrain.engine import user_errors_exit
from pgtrain.errors import ConfigError


def convert(source: str, target: str, *, weights_only: bool = False) -> dict:
    """Writes the sharded checkpoint `source` as the single file `target`; returns its dict.

    Raises:
        ConfigError: `source` is not a sharded checkpoint, or `target` is a folder.
        CheckpointError: `source` is incomplete, damaged or unsafe (from `read_sharded`).
    """
    if not is_sharded_checkpoint(source):
        raise ConfigError(
            f"{source} is not a sharded checkpoint (a .dcp folder); a .pth file needs no conversion"
        )
    if os.path.isdir(target):
        raise ConfigError(f"{target} is a folder; give the .pth file to write")
    data = read_sharded(source)
    if weights_only:
        data = {"model": data["model"]}
    write_atomically(PathManager(), target, lambda f: torch.save(data, f))
    return data


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("source", help="the sharded checkpoint folder (.dcp)")
    parser.add_argument("target", help="the .pth file to write")
    parser.add_argument(
        "--weights-only",
        action="store_true",
        help="keep only the model weights (for inference), not the training state",
    )
    args = parser.parse_args(argv)
    with user_errors_exit():
        data = convert(args.source, args.target, weights_only=args.weights_only)
        tensors = len(data["model"])
        size = os.path.getsize(args.target) / 2**20
        print(f"Wrote {args.target}: {tensors} model tensors, {size:.1f} MiB")


def cli() -> None:
    """The command line: ``pgtrain convert-checkpoint`` / ``python tools/convert_checkpoint.py``."""
    main()


if __name__ == "__main__":
    cli()
