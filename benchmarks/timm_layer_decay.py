"""Layer-decay groups of timm's ViT-B and ViT-L: pgtrain's build + audit against timm's own.

    .venv/bin/python benchmarks/timm_layer_decay.py [--repeats 21]

Both build the groups of the same model (timm's ``vit_base_patch16_224`` and
``vit_large_patch16_224``, made on the meta device: names and shapes only), decay 0.65, weight
decay 0.05, timm's no-weight-decay list: timm with ``timm.optim.param_groups_layer_decay``,
pgtrain with the ``layer_decay`` builder (the automatic layer resolver, the per-parameter
record and the audit that every trainable parameter is in exactly one group included). The two
alternate in one process; the median of pgtrain's time over timm's in the same repeat is
printed (target <= 1.0). Nothing is asserted. timm is in the ``dev`` extra.
"""

import argparse
import statistics
import time

import timm
import torch
from timm.optim import param_groups_layer_decay

from pgtrain.param_groups import build_param_groups

DECAY, WD = 0.65, 0.05


def timm_groups(model):
    return param_groups_layer_decay(
        model, weight_decay=WD, no_weight_decay_list=model.no_weight_decay(), layer_decay=DECAY
    )


def pgtrain_groups(model):
    return build_param_groups(
        model,
        builder="layer_decay",
        lr=1e-3,
        weight_decay=WD,
        decay=DECAY,
        skip=list(model.no_weight_decay()),
    )


def seconds(fn, model) -> float:
    start = time.perf_counter()
    fn(model)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=21)
    args = parser.parse_args()
    print(f"timm {timm.__version__}, torch {torch.__version__}")
    for name in ("vit_base_patch16_224", "vit_large_patch16_224"):
        with torch.device("meta"):
            model = timm.create_model(name, pretrained=False)
        tensors = sum(1 for _ in model.parameters())
        ours, theirs = pgtrain_groups(model), timm_groups(model)  # warm up
        ratios, ours_s, theirs_s = [], [], []
        for repeat in range(args.repeats):
            if repeat % 2:
                a, b = seconds(pgtrain_groups, model), seconds(timm_groups, model)
            else:
                b, a = seconds(timm_groups, model), seconds(pgtrain_groups, model)
            ratios.append(a / b)
            ours_s.append(a)
            theirs_s.append(b)
        print(
            f"{name}: {tensors} tensors; pgtrain {len(ours)} groups in "
            f"{statistics.median(ours_s) * 1e3:.2f} ms, timm {len(theirs)} groups in "
            f"{statistics.median(theirs_s) * 1e3:.2f} ms; median ratio pgtrain / timm "
            f"{statistics.median(ratios):.2f} (target <= 1.0)",
            flush=True,
        )


if __name__ == "__main__":
    main()
