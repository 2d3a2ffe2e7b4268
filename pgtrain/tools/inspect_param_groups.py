"""Show the param groups a config builds, on the CPU, without training.

    python tools/inspect_param_groups.py --config configs/quick/toy.py
    python tools/inspect_param_groups.py --config configs/quick/toy.py --verbose
    python tools/inspect_param_groups.py --config FILE optimizer.params.builder=layer_decay \
        --explain blocks.0.fc.weight --json groups.json

The table is the one every training run logs. ``--verbose`` adds, per group, lr, eps,
weight_decay, betas or momentum and every parameter's name and shape; ``--explain NAME`` says
which rules set a parameter's hyperparameters; ``--json OUT`` writes the report for tools.

The run is built exactly as `tools/train_net.py` builds it (`pgtrain.engine.build_run`): the
initial weights are loaded first (``train.init_checkpoint``, weights built into the model such as
an ImageNet backbone, or with ``--resume`` the last checkpoint), so `fresh` rules select what
training selects, and the LRs are those of the first iteration, batch-size scaling included (with
``--resume``, of the first iteration the resumed run trains, ``lr at iter N``, followed by what
changed against the checkpoint). "lr scale" is each group's LR over the base LR, and ``--explain``
names the builder when its groups set a value themselves (``set by builder 'name'``).
``--head-lr-multiplier X`` replaces the config's grouping as it does for training.
"""

import argparse
import json
import sys

from pgtrain.engine import (
    add_grouping_arguments,
    build_run,
    prepare_run,
    user_errors_exit,
)
from pgtrain.param_groups import format_param_group_details, param_groups_to_dict
from pgtrain.utils.file_io import output_path


def parse_args(argv=None):
    """Parses the command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, metavar="FILE")
    parser.add_argument("--verbose", action="store_true", help="list every parameter per group")
    parser.add_argument(
        "--explain",
        action="append",
        default=[],
        metavar="NAME",
        help="say which rules set this parameter's hyperparameters (repeatable)",
    )
    parser.add_argument("--json", metavar="OUT", help="write the report as JSON to OUT")
    parser.add_argument(
        "--resume",
        action="store_true",
        help="the groups a --resume run builds: weights and fresh parameters from the last "
        "checkpoint in train.output_dir",
    )
    add_grouping_arguments(parser)
    parser.add_argument("opts", nargs="*", metavar="key=value")
    return parser.parse_intermixed_args(argv)


def main(argv=None):
    """Builds the run's model and param groups from the config and prints the report."""
    args = parse_args(argv)
    if args.json:
        output_path(args.json, "--json")  # before the model is built
    request = prepare_run(args)
    run = build_run(request.cfg, resume=args.resume, device="cpu", notes=request.notes)
    print(run.table())
    if args.verbose:
        print(format_param_group_details(run.groups, run.model))
    factor = float(getattr(run.scheduler, "lr_factor", 1.0))  # batch-size LR scaling
    for name in args.explain:
        print(run.groups.explain(name, lr_factor=factor))
    if args.json:
        report = param_groups_to_dict(run.groups, run.model)
        report["notes"] += run.notes
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)
        print(f"report written to {args.json}", file=sys.stderr)


def cli() -> None:
    """The command line: ``pgtrain inspect`` / ``python tools/inspect_param_groups.py``."""
    with user_errors_exit():
        main()


if __name__ == "__main__":
    cli()
