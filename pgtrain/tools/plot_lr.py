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

from pgtrain.engine import (  # noqa: E402
    add_grouping_arguments,
    build_run,
    prepare_run,
    user_errors_exit,
)
from pgtrain.errors import ConfigError  # noqa: E402
from pgtrain.utils.file_io import output_path  # noqa: E402


def lr_curves(cfg, resume=False):
    """Returns ``{group name: [lr of the 1st iteration, the 2nd, ...]}`` for the run `cfg`
    describes (the console's "iter 1/N" uses the first)."""
    scheduler = build_run(cfg, resume=resume, device="cpu").scheduler
    if not hasattr(scheduler, "lr_curves"):
        raise ConfigError("lr_scheduler must be an LRMultiplier (configs/common/schedules.py)")
    return scheduler.lr_curves()


_STYLES = ("-", "--", ":", "-.")
_LEGEND_ROWS = 24  # entries per legend column


def plot(curves, out, *, log=False, title=""):
    """Draws one line per distinct curve into the PNG `out` (groups whose LRs are the same at
    every iteration share a line and a legend entry); returns the figure.

    Every line gets its own colour and line style (10 colours, then the next style, up to 40
    lines; 20 colours beyond), and the legend sits outside the axes, so it hides no curve.
    """
    shared = _same_curves(curves)
    columns = max(1, -(-len(shared) // _LEGEND_ROWS))
    fig, ax = plt.subplots(figsize=(8 + 2.2 * columns, 4.5), layout="constrained")
    for i, (names, values) in enumerate(shared):
        color, style = _look(i, len(shared))
        # x: the iteration as the console counts it (1 = the first), so "iter 20/20" is at 20
        ax.plot(
            range(1, len(values) + 1), values, label=", ".join(names), color=color, linestyle=style
        )
    if log:
        ax.set_yscale("log")
    ax.set_xlabel("iteration")
    ax.set_ylabel("learning rate")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    fig.legend(loc="outside right upper", fontsize="small", ncol=columns)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return fig


def _same_curves(curves):
    """``[(group names, values)]``: groups with identical LR curves together, in first order."""
    merged = {}
    for name, values in curves.items():
        merged.setdefault(tuple(values), []).append(name)
    return [(names, list(values)) for values, names in merged.items()]


def _look(i, count):
    """The colour and line style of line `i` of `count`: no two lines alike up to 80."""
    palette = "tab10" if count <= 40 else "tab20"
    colors = plt.get_cmap(palette).colors
    return colors[i % len(colors)], _STYLES[(i // len(colors)) % len(_STYLES)]


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
    output_path(args.out, "--out")  # before the curves are computed
    request = prepare_run(args)
    for note in request.notes:
        print(f"note: {note}")
    curves = lr_curves(request.cfg, resume=args.resume)
    plot(curves, args.out, log=args.log, title=args.config)
    print(f"{len(curves)} groups, {len(next(iter(curves.values())))} iterations -> {args.out}")


def cli() -> None:
    """The command line: ``pgtrain plot-lr`` / ``python tools/plot_lr.py``."""
    with user_errors_exit():
        main()


if __name__ == "__main__":
    cli()
