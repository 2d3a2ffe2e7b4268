#!/usr/bin/env python
"""Plot every param group's LR over the whole schedule, without training.

    python tools/plot_lr.py --config configs/quick/toy.py --out lr.png
    python tools/plot_lr.py --config FILE train.max_iter=1000 --out lr.png --log

The run is built on the CPU exactly as `tools/train_net.py` builds it (`pgtrain.engine.build_run`:
initial weights, so `fresh` rules match what training matches, groups, batch-size scaling), then
the LR scheduler's curves are drawn, one line per group. ``--head-lr-multiplier X`` replaces the
config's grouping as it does for training.
"""

import argparse

import matplotlib

matplotlib.use("Agg")  # files only: no display needed
import matplotlib.pyplot as plt  # noqa: E402

from pgtrain.config import LazyConfig  # noqa: E402
from pgtrain.engine import (  # noqa: E402
    add_grouping_arguments,
    apply_grouping_arguments,
    build_run,
    user_errors_exit,
)
from pgtrain.errors import ConfigError  # noqa: E402


def lr_curves(cfg, resume=False):
    """Returns ``{group name: [lr at iteration 0, 1, ...]}`` for the run `cfg` describes."""
    scheduler = build_run(cfg, resume=resume, device="cpu").scheduler
    if not hasattr(scheduler, "lr_curves"):
        raise ConfigError("lr_scheduler must be an LRMultiplier (configs/common/schedules.py)")
    return scheduler.lr_curves()


def plot(curves, out, *, log=False, title=""):
    """Draws one line per group into the PNG `out`; returns the figure."""
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for name, values in curves.items():
        ax.plot(range(len(values)), values, label=name, linewidth=1.5)
    if log:
        ax.set_yscale("log")
    ax.set_xlabel("iteration")
    ax.set_ylabel("learning rate")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="best", fontsize="small", ncol=max(1, len(curves) // 12))
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return fig


def main(argv=None):
    """Parses the command line, computes the curves and writes the plot."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, metavar="FILE")
    parser.add_argument("--out", required=True, metavar="PNG")
    parser.add_argument("--log", action="store_true", help="logarithmic LR axis")
    parser.add_argument(
        "--resume", action="store_true", help="the groups a --resume run builds (last checkpoint)"
    )
    add_grouping_arguments(parser)
    parser.add_argument("opts", nargs="*", metavar="key=value")
    args = parser.parse_intermixed_args(argv)
    cfg = LazyConfig.apply_overrides(LazyConfig.load(args.config), args.opts)
    for note in apply_grouping_arguments(cfg, args):
        print(f"note: {note}")
    curves = lr_curves(cfg, resume=args.resume)
    plot(curves, args.out, log=args.log, title=args.config)
    print(f"{len(curves)} groups, {len(next(iter(curves.values())))} iterations -> {args.out}")


if __name__ == "__main__":
    with user_errors_exit():
        main()
