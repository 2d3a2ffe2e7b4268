#!/usr/bin/env python
"""The unfreezing study: how should a fine-tuned Mask R-CNN's pretrained part start training?

    .venv/bin/python projects/maskrcnn/unfreeze_study.py --out output/unfreeze_study

1. Trains the main job's model on shapes set A (`config.py`, its 450 iterations), or reuses
   ``--base`` weights.
2. Fine-tunes it on set B (`finetune_config.py`: new classes, so new box and mask predictors)
   for the same budget four ways:

   - ``uniform``: one LR for everything (``optimizer.params.rules=[]``);
   - ``heads_10x``: the parameters the checkpoint did not provide (the new predictors) at 10x,
     the config as shipped;
   - ``delayed_start``: heads at 10x, the rest (group ``default``) held at LR 0 for the first
     epoch by a ``delayed_start`` group schedule, then warmed up over 50 iterations; its
     gradients are computed all along;
   - ``unfreeze``: heads at 10x, the rest frozen for the first epoch by ``train.unfreeze`` (no
     gradients, no backward through it), then trained with the same 50-iteration warmup.

Prints and writes ``<out>/results.md``: segm AP, bbox AP, the final loss, and the median time
per iteration over the first epoch and after it, as the runs logged them. ``--variants``
trains some of them (e.g. ``--variants base,unfreeze``); the table lists every run in ``--out``.
"""

import argparse
import os
import statistics

from projects.study import final_metrics, markdown_table, metrics_records, train_net, write_results

BASE_CONFIG = "projects/maskrcnn/config.py"
FINETUNE_CONFIG = "projects/maskrcnn/finetune_config.py"


def variants(iters: int, epoch: int, warmup: int) -> dict[str, list[str]]:
    """Each variant's overrides on `finetune_config.py` for a run of `iters` iterations, the
    pretrained part held for `epoch` iterations (one epoch) and then warmed up over `warmup`
    (the delayed start's positions are fractions of the run)."""
    delayed = (
        "lr_scheduler.group_schedules={default: {_target_: pgtrain.solver.build_schedule, "
        f"name: delayed_start, hold_length: {epoch / iters}, warmup_length: {warmup / iters}}}}}"
    )
    return {
        "uniform": ["optimizer.params.rules=[]"],
        "heads_10x": [],
        "delayed_start": [delayed],
        "unfreeze": [f"train.unfreeze.stages=[{{groups: [default], at: '1ep', warmup: {warmup}}}]"],
    }


def row(name: str, run_dir: str, epoch: int) -> str:
    """One markdown row from a run's metrics.json."""
    m = final_metrics(run_dir)
    records = metrics_records(run_dir)
    losses = [r["total_loss"] for r in records if "total_loss" in r]
    timed = [(r["iteration"], r["time"]) for r in records if "time" in r]
    first = [t for i, t in timed if i <= epoch]
    rest = [t for i, t in timed if i > epoch]

    def med(values: list[float]) -> str:
        return f"{statistics.median(values):.3f}" if values else "-"

    return (
        f"| {name} | {m['segm/AP']:.3f} | {m['bbox/AP']:.3f} | {losses[-1]:.3f} | {med(first)} "
        f"| {med(rest)} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="output/unfreeze_study")
    parser.add_argument("--base", default="", help="base weights (skip training the base model)")
    parser.add_argument("--base-iters", type=int, default=450, help="the main job's length")
    parser.add_argument("--iters", type=int, default=400, help="fine-tuning budget per variant")
    parser.add_argument(
        "--epoch", type=int, default=150, help="iterations per epoch of set B (600 / batch 4)"
    )
    parser.add_argument("--warmup", type=int, default=50, help="the held part's warmup")
    parser.add_argument(
        "--variants",
        default="base,uniform,heads_10x,delayed_start,unfreeze",
        help="what to train now (comma-separated); the table lists every run in --out",
    )
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="overrides for every run")
    args = parser.parse_args()
    out = os.path.abspath(args.out)
    chosen = [v for v in args.variants.split(",") if v]  # "": the table of the runs there
    base = args.base or f"{out}/base/model_final.pth"
    if not args.base and "base" in chosen:
        train_net(
            "--config",
            BASE_CONFIG,
            f"train.output_dir={out}/base",
            "train.overwrite=True",
            f"train.max_iter={args.base_iters}",
            *args.opts,
        )
    every = variants(args.iters, args.epoch, args.warmup)
    unknown = set(chosen) - {"base", *every}
    if unknown:
        parser.error(f"--variants: unknown {sorted(unknown)}; choose from base, {', '.join(every)}")
    for name, overrides in every.items():
        if name not in chosen:
            continue
        train_net(
            "--config",
            FINETUNE_CONFIG,
            *overrides,
            f"train.init_checkpoint={base}",
            f"train.output_dir={out}/{name}",
            "train.overwrite=True",
            f"train.max_iter={args.iters}",
            f"train.eval_period={args.iters}",
            *args.opts,
        )
    rows = [row(n, f"{out}/{n}", args.epoch) for n in every if os.path.isdir(f"{out}/{n}")]
    header = [f"fine-tuning on set B ({args.iters} iterations)", "segm AP", "bbox AP"]
    header += ["final loss", "s/it, epoch 1", "s/it, after"]
    write_results(out, markdown_table(header, rows))


if __name__ == "__main__":
    main()
