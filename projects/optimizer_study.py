#!/usr/bin/env python
"""The optimizer study: Muon + AdamW against AdamW on the ViT, and EMA weights on Mask R-CNN.

    .venv/bin/python projects/optimizer_study.py --out output/optimizer_study

1. The ViT on digits, trained from scratch on the digits 0-5 (`projects/vit/pretrain_config.py`,
   600 iterations) with AdamW and with Muon + AdamW (`projects/vit/muon_config.py`: the `muon`
   builder, Moonlight's LR adjustment, so both use the same base LR 5e-4), at equal iterations.
2. Each of the two models fine-tuned on the unseen digits 6-9 (new head at 10x, no layer decay,
   300 iterations) with each optimizer: 2 x 2 runs.
3. The main Mask R-CNN job (`projects/maskrcnn/config.py`) with ``train.ema.enabled=True``: one
   run evaluates the trained weights and their EMA (``ema/`` metrics). The hook only reads the
   weights, so the trained weights are those of a run without it (tests/engine/test_ema.py).

Prints and writes ``<out>/results.md``: final val top-1, the training loss of the last log
period, and the median time per iteration for the ViT runs; segm and bbox AP for both weights of
the Mask R-CNN run. ``--only vit`` or ``--only maskrcnn`` runs one part.
"""

import argparse
import os

from projects.study import (
    final_metrics,
    markdown_table,
    median_step_time,
    metrics_records,
    train_net,
    write_results,
)

SCRATCH = {  # the pre-training runs: equal data, model, schedule and base LR
    "adamw": ["--config", "projects/vit/pretrain_config.py"],
    "muon": [
        "--config",
        "projects/vit/muon_config.py",
        "digits.classes=[0,1,2,3,4,5]",
        "model.num_classes=6",
        "optimizer.params.rules=[]",
    ],
}
FINETUNE = {  # the fine-tuning runs on 6-9: a new head at 10x, no layer decay for either
    "adamw": ["--config", "projects/vit/config.py", "optimizer.params.decay=1.0"],
    "muon": ["--config", "projects/vit/muon_config.py"],
}
NAMES = {"adamw": "AdamW", "muon": "Muon + AdamW"}


def run(run_dir: str, args: list[str], *overrides: str) -> None:
    """One training run into `run_dir` (a rerun of the study redoes it; old runs set aside)."""
    train_net(*args, f"train.output_dir={run_dir}", "train.overwrite=True", *overrides)


def last_loss(run_dir: str) -> float:
    """The training loss (median over the last log period) of a run's last logged iteration."""
    return [r for r in metrics_records(run_dir) if "total_loss" in r][-1]["total_loss"]


def vit_row(stage: str, optimizer: str, iters: int, run_dir: str) -> str:
    top1 = final_metrics(run_dir, "top1")["top1"]
    return (
        f"| {stage} | {NAMES[optimizer]} | {iters} | {top1:.1f} | {last_loss(run_dir):.3f} | "
        f"{median_step_time(run_dir):.3f} |"
    )


def vit_study(out: str, scratch_iters: int, finetune_iters: int) -> list[str]:
    rows = []
    for optimizer, args in SCRATCH.items():
        run_dir = f"{out}/vit_scratch_{optimizer}"
        run(run_dir, args, f"train.max_iter={scratch_iters}")
        rows.append(vit_row("scratch, digits 0-5", optimizer, scratch_iters, run_dir))
    for base in SCRATCH:
        for optimizer, args in FINETUNE.items():
            run_dir = f"{out}/vit_finetune_{optimizer}_from_{base}"
            run(
                run_dir,
                args,
                f"train.init_checkpoint={out}/vit_scratch_{base}/model_final.pth",
                f"train.max_iter={finetune_iters}",
            )
            stage = f"fine-tune 6-9 from the {NAMES[base]} model"
            rows.append(vit_row(stage, optimizer, finetune_iters, run_dir))
    header = ["ViT on digits", "optimizer", "iterations", "val top-1 (%)", "last loss"]
    return markdown_table([*header, "s / iteration"], rows)


def maskrcnn_study(out: str, iters: int | None) -> list[str]:
    run_dir = f"{out}/maskrcnn_ema"
    length = [f"train.max_iter={iters}"] if iters else []
    run(run_dir, ["--config", "projects/maskrcnn/config.py"], "train.ema.enabled=True", *length)
    m = final_metrics(run_dir, "ema/segm/AP")
    return markdown_table(
        ["Mask R-CNN main job", "segm AP", "bbox AP", "segm AP50"],
        [
            f"| trained weights | {m['segm/AP']:.3f} | {m['bbox/AP']:.3f} | {m['segm/AP50']:.3f} |",
            f"| EMA of the weights | {m['ema/segm/AP']:.3f} | {m['ema/bbox/AP']:.3f} | "
            f"{m['ema/segm/AP50']:.3f} |",
        ],
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="output/optimizer_study")
    parser.add_argument("--only", choices=("vit", "maskrcnn"), help="run one part of the study")
    parser.add_argument("--scratch-iters", type=int, default=600)
    parser.add_argument("--finetune-iters", type=int, default=300)
    parser.add_argument("--maskrcnn-iters", type=int, help="default: the config's length")
    args = parser.parse_args()
    out = os.path.abspath(args.out)
    tables = []
    if args.only in (None, "vit"):
        tables.append(vit_study(out, args.scratch_iters, args.finetune_iters))
    if args.only in (None, "maskrcnn"):
        tables.append(maskrcnn_study(out, args.maskrcnn_iters))
    write_results(out, *tables)


if __name__ == "__main__":
    main()
