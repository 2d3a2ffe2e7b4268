"""Compare two param groupings parameter by parameter, before anything trains.

    python tools/diff_param_groups.py configs/quick/toy.py "configs/quick/toy.py optimizer.lr=0.01"
    python tools/diff_param_groups.py projects/maskrcnn/config.py \\
        "projects/maskrcnn/config.py --head-lr-multiplier 10"
    python tools/diff_param_groups.py output/toy "configs/quick/toy.py optimizer.lr=0.01"
    python tools/diff_param_groups.py output/toy/model_0000099.pth output/toy --json diff.json

Each side is one argument: a config (``.py`` or ``.yaml``) followed by its overrides and grouping
flags, exactly as `tools/train_net.py` takes them (quote the side), or a run folder (its last
checkpoint) or a checkpoint (``.pth`` file or ``.dcp`` folder). Per parameter it compares the
group, LR, weight decay, optimizer route (Muon / AdamW), frozen and fresh, and prints one line per
kind of difference with the rules that made it ("14 parameters moved from 'default' to 'new'").
A checkpoint against a config previews what ``--resume`` with that config would do: the optimizer
state restored, moved, added, dropped or started anew. The configs are built on the CPU as
training builds them (`pgtrain.engine.build_run`); nothing is written but ``--json``.

Exit status: 0 when the groupings are equal, 1 when they differ (pin an optimizer setup in CI),
2 for a usage error.
"""

import argparse
import json
import os
import shlex
import sys

import torch

from pgtrain.checkpoint import Checkpointer, read_any_checkpoint
from pgtrain.checkpoint.sharded import is_sharded_checkpoint
from pgtrain.engine import add_grouping_arguments, build_run, prepare_run, user_errors_exit
from pgtrain.errors import CheckpointError, ConfigError
from pgtrain.param_groups import load_optimizer_state_by_name
from pgtrain.param_groups.diff import diff_views, view_of_checkpoint, view_of_groups
from pgtrain.utils.file_io import output_path

_CONFIG_SUFFIXES = (".py", ".yaml", ".yml")


def parse_args(argv=None):
    """Parses the command line."""
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        epilog="A side: 'CONFIG [key=value ...] [--head-lr-multiplier X]', a run folder, or a "
        "checkpoint (.pth / .dcp)",
    )
    parser.add_argument("a", metavar="A", help="the first side (quoted with its overrides)")
    parser.add_argument("b", metavar="B", help="the second side")
    parser.add_argument("--json", default="", metavar="OUT", help="also write the report as JSON")
    parser.add_argument(
        "--max-names", type=int, default=5, metavar="N", help="parameter names shown per line"
    )
    return parser.parse_args(argv)


def side_parser():
    """The parser of a config side: the config, its overrides and grouping flags."""
    parser = argparse.ArgumentParser(prog="side", add_help=False, exit_on_error=False)
    parser.add_argument("config")
    add_grouping_arguments(parser)
    parser.add_argument("opts", nargs="*")
    return parser


class Side:
    """One side: a config's run (built on the CPU) or a checkpoint's recorded grouping."""

    def __init__(self, spec: str, which: str):
        words = shlex.split(spec)
        if not words:
            raise ConfigError(f"side {which} is empty; give a config, a run folder or a checkpoint")
        self.spec, self.run, self.contents = spec, None, None
        path = words[0]
        if path.endswith(_CONFIG_SUFFIXES) and not os.path.isdir(path):
            try:
                args = side_parser().parse_intermixed_args(words)
            except argparse.ArgumentError as e:
                raise ConfigError(f"side {which} '{spec}': {e}") from e
            request = prepare_run(args)
            self.run = build_run(request.cfg, device="cpu", notes=request.notes)
            factor = getattr(self.run.scheduler, "lr_factor", None)
            self.view = view_of_groups(
                f"{spec} (config; builder '{self.run.groups.record.builder}')",
                self.run.groups,
                fresh=self.run.fresh if self.run.weights.path or self.run.fresh else None,
                lr_factor=factor,
                optimizer=type(self.run.optimizer).__name__,
                unfreezing=self.run.unfreezing.summary() if self.run.unfreezing else "",
            )
            return
        if len(words) > 1:
            raise ConfigError(
                f"side {which} '{spec}': overrides apply to a config, not to a checkpoint; give "
                "the config the run was trained with instead"
            )
        self.path = _checkpoint_file(path, which)
        self.contents = _read(self.path)
        iteration = self.contents.get("iteration")
        done = f" at iteration {iteration + 1}" if isinstance(iteration, int) else ""
        self.view = view_of_checkpoint(f"{self.path} (checkpoint{done})", self.contents)
        if self.view is None:
            raise CheckpointError(
                f"{self.path} holds weights but no optimizer state, so it records no grouping; "
                "give a checkpoint a pgtrain run saved, or the run's config"
            )


def _checkpoint_file(path: str, which: str) -> str:
    """A run folder's last checkpoint, or the checkpoint itself."""
    if os.path.isdir(path) and not is_sharded_checkpoint(path):
        last = Checkpointer(torch.nn.Module(), path).get_checkpoint_file()
        if not last:
            raise ConfigError(
                f"side {which}: '{path}' is a folder without a last_checkpoint; give a checkpoint "
                "file, a run folder, or a config (.py / .yaml)"
            )
        return last
    if not os.path.exists(path):
        raise ConfigError(
            f"side {which}: '{path}' does not exist; give a config (.py / .yaml), a run folder "
            "or a checkpoint (.pth / .dcp)"
        )
    return path


def _read(path: str) -> dict:
    data = read_any_checkpoint(path)
    if not isinstance(data, dict):
        raise CheckpointError(f"{path} is not a checkpoint dict; give a checkpoint pgtrain saved")
    return data


def resume_preview(checkpoint: Side, config: Side) -> list[str]:
    """What ``--resume`` with `config` would do with `checkpoint`'s optimizer state: loaded into
    the config's freshly built optimizer (thrown away after), by parameter name."""
    state = checkpoint.contents["trainer"]["optimizer"]
    report = load_optimizer_state_by_name(config.run.optimizer, state, config.run.model)
    return [f"--resume with B: {line}" for line in report.summary().splitlines()]


def main(argv=None) -> int:
    """Builds or reads both sides, prints the comparison; returns the exit status."""
    args = parse_args(argv)
    if args.json:
        output_path(args.json, "--json")  # before anything is built
    a, b = Side(args.a, "A"), Side(args.b, "B")
    diff = diff_views(a.view, b.view)
    lines = diff.lines(args.max_names)
    if a.contents is not None and b.run is not None:
        lines += resume_preview(a, b)
    for line in lines:
        print(line)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({**diff.to_dict(), "lines": lines}, f, indent=1)
        print(f"report written to {args.json}", file=sys.stderr)
    return 0 if diff.equal else 1


def cli() -> None:
    """The command line: ``pgtrain diff`` / ``python tools/diff_param_groups.py``."""
    with user_errors_exit():
        sys.exit(main())


if __name__ == "__main__":
    cli()
