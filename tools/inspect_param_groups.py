#!/usr/bin/env python
"""Show the param groups a config builds, on the CPU, without training.

    python tools/inspect_param_groups.py --config configs/quick/toy.py
    python tools/inspect_param_groups.py --config configs/quick/toy.py --verbose
    python tools/inspect_param_groups.py --config FILE optimizer.params.builder=layer_decay \
        --explain blocks.0.fc.weight --json groups.json

The table is the one every training run logs. ``--verbose`` adds, per group, lr, eps,
weight_decay, betas or momentum and every parameter's name and shape; ``--explain NAME`` says
which rules set a parameter's hyperparameters; ``--json OUT`` writes the report for tools. If
``train.init_checkpoint`` is set, it is loaded first, so `fresh` rules select what it lacks.
"""

import argparse
import json
import sys

from pgtrain.checkpoint import Checkpointer
from pgtrain.config import LazyConfig, instantiate
from pgtrain.engine import user_errors_exit
from pgtrain.errors import ConfigError
from pgtrain.param_groups import (
    ParamGroups,
    format_param_group_details,
    format_param_group_table,
    param_groups_to_dict,
)
from pgtrain.solver import build_optimizer, build_param_groups_from_config


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
    parser.add_argument("opts", nargs="*", metavar="key=value")
    return parser.parse_intermixed_args(argv)


def main(argv=None):
    """Builds the model and its param groups from the config and prints the report."""
    args = parse_args(argv)
    cfg = LazyConfig.apply_overrides(LazyConfig.load(args.config), args.opts)
    model = instantiate(cfg.model, "model").cpu()
    init = cfg.train.get("init_checkpoint", "") if "train" in cfg else ""
    fresh = Checkpointer(model).resume_or_load(init, resume=False).fresh if init else []
    groups = build_param_groups_from_config(cfg.optimizer, model, fresh=fresh)
    optimizer = build_optimizer(cfg.optimizer, model, groups=groups)
    print(format_param_group_table(groups, model))
    if args.verbose:
        print(format_param_group_details(optimizer, model))
    for name in args.explain:
        if not isinstance(groups, ParamGroups):
            raise ConfigError("--explain needs groups from a pgtrain param-group builder")
        print(groups.explain(name))
    if args.json:
        report = param_groups_to_dict(groups, model)
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)
        print(f"report written to {args.json}", file=sys.stderr)


if __name__ == "__main__":
    with user_errors_exit():
        main()
