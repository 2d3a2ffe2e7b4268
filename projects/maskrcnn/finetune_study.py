#!/usr/bin/env python
"""The Mask R-CNN fine-tuning study, reproduced: which LRs should new box/mask predictors get?

    .venv/bin/python projects/maskrcnn/finetune_study.py --out output/finetune_study

1. Trains a base model on shapes set A (`config.py`), or reuses ``--base`` weights.
2. Fine-tunes it on set B (new classes, so new predictors) at the same budget three ways:
   ``uniform`` (one LR for everything: the recipe's bug), ``head_multiplier`` (box and mask
   predictors at 10x, the rest of the detector 5x: the recipe's name-matching fix) and ``fresh``
   (exactly the parameters the checkpoint could not provide at 10x).
3. Resumes the uniform run with the multiplier switched on (`--head-lr-multiplier 10`) for
   ``--extra-iters`` more iterations: optimizer state is restored by name into the new groups.

Prints and writes ``<out>/results.md``: segm AP, bbox AP, and the median predicted / ground-truth
mask area of matched detections (the "small masks" symptom of an undertrained mask head) for
each run.
"""

import argparse
import os
import shutil

from projects.study import final_metrics, markdown_table, train_net, write_results

BASE_CONFIG = "projects/maskrcnn/config.py"
FINETUNE_CONFIG = "projects/maskrcnn/finetune_config.py"
VARIANTS = {
    "uniform": ["optimizer.params.rules=[]"],
    "head_multiplier": ["--head-lr-multiplier", "10"],  # replaces the config's fresh rule
    "fresh": [],  # finetune_config.py's own rule: fresh=True, lr_mult=10
}


def row(name: str, iters: int, m: dict) -> str:
    """One markdown table row."""
    ratio = m.get("segm/mask_area_ratio")
    ratio_text = f"{ratio:.2f}" if ratio is not None else "-"
    return (
        f"| {name} | {iters} | {m['segm/AP']:.3f} | {m['bbox/AP']:.3f} | {ratio_text} | "
        f"{m.get('segm/num_matched', 0):.0f} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="output/finetune_study")
    parser.add_argument("--base", default="", help="base weights (skip training the base model)")
    parser.add_argument("--base-iters", type=int, default=1200)
    parser.add_argument("--iters", type=int, default=400, help="fine-tuning budget per variant")
    parser.add_argument("--extra-iters", type=int, default=200)
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="overrides for every run")
    args = parser.parse_args()
    out = os.path.abspath(args.out)
    base = args.base
    if not base:
        train_net(
            "--config",
            BASE_CONFIG,
            f"train.output_dir={out}/base",
            "train.overwrite=True",  # a rerun of the study redoes its runs (old ones set aside)
            f"train.max_iter={args.base_iters}",
            *args.opts,
        )
        base = f"{out}/base/model_final.pth"
    common = [
        f"train.init_checkpoint={base}",
        f"train.max_iter={args.iters}",
        f"train.eval_period={args.iters}",
        *args.opts,
    ]
    rows = []
    for name, overrides in VARIANTS.items():
        run_dir = f"{out}/{name}"
        train_net(
            "--config",
            FINETUNE_CONFIG,
            *overrides,
            f"train.output_dir={run_dir}",
            "train.overwrite=True",
            *common,
        )
        rows.append(row(name, args.iters, final_metrics(run_dir)))
    # The recipe's "resume with the multiplier switched on", on a copy of the uniform run.
    resumed = f"{out}/uniform_then_head_multiplier"
    shutil.rmtree(resumed, ignore_errors=True)
    shutil.copytree(f"{out}/uniform", resumed)
    total = args.iters + args.extra_iters
    train_net(
        "--config",
        FINETUNE_CONFIG,
        "--resume",
        *VARIANTS["head_multiplier"],
        f"train.output_dir={resumed}",
        *common,
        f"train.max_iter={total}",
        f"train.eval_period={total}",
    )
    rows.append(
        row("uniform, then resumed with --head-lr-multiplier 10", total, final_metrics(resumed))
    )
    header = ["fine-tuning on set B", "iterations", "segm AP", "bbox AP", "mask area ratio"]
    write_results(out, markdown_table([*header, "matched"], rows))


if __name__ == "__main__":
    main()
