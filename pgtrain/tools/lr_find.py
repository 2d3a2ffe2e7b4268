"""LR range test that keeps the param groups' ratios: one factor swept over every group at once.

    python tools/lr_find.py --config configs/quick/toy.py
    python tools/lr_find.py --config projects/maskrcnn/config.py --iters 100 --max-lr 0.5
    python tools/lr_find.py --config FILE --min-lr 1e-5 --max-lr 1 --output-dir out/lr_find

The config's own model, data, groups and optimizer train for up to ``--iters`` iterations while
the base LR rises exponentially from ``--min-lr`` to ``--max-lr``; every group keeps its
configured multiple of the base (layer decay, head multipliers and group LRs stay as they are;
Lightning's ``lr_find`` sets every group to one LR). The sweep stops once the smoothed loss
passes 4x its minimum. It prints the suggested base LR with the rule that chose it, where the
loss diverged and which group's gradient norm blew up first, and writes ``lr_find.png`` (loss
against the base LR) and ``lr_find.json`` into ``--output-dir`` (default
``<train.output_dir>/lr_find``); nothing else is written, no checkpoint and no config. It runs
in one process on ``train.device``; the config's schedule is not used.
"""

import argparse
import json
import math
import os

import matplotlib

matplotlib.use("Agg")  # files only: no display needed
import matplotlib.pyplot as plt  # noqa: E402

from pgtrain.engine import (  # noqa: E402
    ParamGroupStatsHook,
    Trainer,
    add_grouping_arguments,
    build_run,
    prepare_run,
    user_errors_exit,
)
from pgtrain.engine.hooks.lr_sweep import LRSweepHook  # noqa: E402
from pgtrain.errors import ConfigError  # noqa: E402
from pgtrain.param_groups.names import param_group_names  # noqa: E402
from pgtrain.solver.lr_range import analyse_range, sweep_factors  # noqa: E402
from pgtrain.utils.file_io import output_path  # noqa: E402


def parse_args(argv=None):
    """Parses the command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, metavar="FILE")
    parser.add_argument("--min-lr", type=float, help="the first base LR (default: base / 1000)")
    parser.add_argument("--max-lr", type=float, help="the last base LR (default: base x 100)")
    parser.add_argument("--iters", type=int, default=100, help="iterations at most (default 100)")
    parser.add_argument("--output-dir", default="", metavar="DIR")
    add_grouping_arguments(parser)
    parser.add_argument("opts", nargs="*", metavar="key=value")
    return parser.parse_intermixed_args(argv)


def main(argv=None) -> list[str]:
    """Runs the sweep; prints and returns the report's lines."""
    args = parse_args(argv)
    request = prepare_run(args)
    cfg = request.cfg
    folder = args.output_dir or os.path.join(cfg.train.output_dir, "lr_find")
    output_path(os.path.join(folder, "lr_find.json"), "--output-dir")  # before anything runs
    run = build_run(cfg, with_loader=True, notes=request.notes)
    base = run.groups.record.base_lr
    if not base:
        raise ConfigError("the grouping has no base LR (optimizer.lr): nothing to sweep from")
    low, high = args.min_lr or base / 1000, args.max_lr or base * 100
    factors = [lr / base for lr in sweep_factors(low, high, args.iters)]
    train = run.cfg.train
    trainer = Trainer(
        run.model,
        run.loader,
        run.optimizer,
        accumulation=train.accumulation,
        clip_grad_norm=train.clip_grad_norm,
        strategy=run.strategy,
    )
    sweep = LRSweepHook(factors, float(getattr(run.scheduler, "lr_factor", 1.0) or 1.0))
    trainer.register_hooks([ParamGroupStatsHook(1), sweep])
    trainer.train(0, len(factors))
    base_lrs = [base * f for f in factors[: len(sweep.losses)]]
    result = analyse_range(base_lrs, sweep.losses, sweep.grad_norms)
    multiples = group_multiples(run, base)
    lines = report(result, multiples, base)
    if run.unfreezing is not None:
        lines.append(
            f"note: train.unfreeze holds {run.unfreezing.summary()}; the sweep trains every "
            "group from its first iteration, as the run does after its last stage"
        )
    os.makedirs(folder, exist_ok=True)
    plot(result, base, os.path.join(folder, "lr_find.png"), title=args.config)
    with open(os.path.join(folder, "lr_find.json"), "w") as f:
        json.dump(_json(result, multiples, base, lines), f, indent=1)
    lines.append(f"written: {folder}/lr_find.png, lr_find.json")
    for line in lines:
        print(line)
    return lines


def group_multiples(run, base) -> dict[str, float]:
    """Each group's configured LR over the base LR: what the sweep keeps."""
    groups = run.optimizer.param_groups
    return {
        name: float(g.get("initial_lr", g["lr"])) / base
        for name, g in zip(param_group_names(groups), groups, strict=True)
    }


def report(result, multiples, base) -> list[str]:
    """The lines the tool prints."""
    ratios = ", ".join(f"{name} x{m:.3g}" for name, m in multiples.items())
    lrs = result.base_lrs
    lines = [f"swept base lr {lrs[0]:.3g} -> {lrs[-1]:.3g} over {len(lrs)} iterations "]
    lines[0] += f"(every group at its configured multiple: {ratios})"
    if result.diverged_at is not None:
        lines.append(
            f"diverged at base lr {lrs[result.diverged_at]:.3g} (iteration "
            f"{result.diverged_at + 1}): the smoothed loss passed 4x its minimum"
        )
    else:
        lines.append(f"did not diverge up to base lr {lrs[-1]:.3g}; a larger --max-lr goes further")
    if result.blew_up is not None:
        group, i = result.blew_up
        lines.append(
            f"first to blow up: group '{group}' (gradient norm over 10x its early median at base "
            f"lr {lrs[i]:.3g}, iteration {i + 1})"
        )
    else:
        lines.append("no group's gradient norm passed 10x its early median before the end")
    if result.steepest is not None:
        lines.append(f"steepest descent of the smoothed loss at base lr {result.steepest:.3g}")
    if result.suggestion is None:
        lines.append(f"no suggestion: {result.rule}")
    else:
        lines.append(
            f"suggested base lr: {result.suggestion:.3g} ({result.rule}); configured: {base:.3g} "
            "(optimizer.lr)"
        )
    return lines


def plot(result, base, path, title="") -> None:
    """Loss (and its moving average) against the base LR, the suggestion and the configured LR."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.plot(result.base_lrs, result.losses, color="0.75", label="loss")
    ax.plot(result.base_lrs[: len(result.smooth)], result.smooth, label="smoothed loss")
    if result.suggestion is not None:
        ax.axvline(result.suggestion, color="tab:green", ls="--", label="suggested")
    ax.axvline(base, color="tab:red", ls=":", label="configured")
    ax.set_xscale("log")
    finite = [x for x in [*result.losses, *result.smooth] if math.isfinite(x)]
    if result.smooth:  # from the lowest loss to the divergence threshold
        ax.set_ylim(min(finite) * 0.9, max(result.smooth[0], min(result.smooth) * 4) * 1.1)
    ax.set_xlabel("base lr (every group at its configured multiple)")
    ax.set_ylabel("loss")
    ax.set_title(title, fontsize=9)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _json(result, multiples, base, lines) -> dict:
    return {
        "configured_base_lr": base,
        "suggested_base_lr": result.suggestion,
        "rule": result.rule,
        "steepest_descent_base_lr": result.steepest,
        "diverged_at": result.diverged_at,
        "first_blew_up": list(result.blew_up) if result.blew_up else None,
        "group_multiples": multiples,
        "base_lrs": result.base_lrs,
        "losses": result.losses,
        "smoothed": result.smooth,
        "lines": lines,
    }


def cli() -> None:
    """The command line: ``pgtrain lr-find`` / ``python tools/lr_find.py``."""
    with user_errors_exit():
        main()


if __name__ == "__main__":
    cli()
