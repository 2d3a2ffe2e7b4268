"""The ViT layer-decay runs that tests/engine/test_fsdp.py compares: one config, trained through
train_net's `main` in one process (DDP strategy) or in two gloo processes (FSDP)."""

import argparse
import json
import os

import torch

from pgtrain.config import LazyConfig

VIT = "projects/vit/config.py"


def vit_config(output_dir: str, *overrides: str):
    """projects/vit/config.py made tiny and deterministic: 2 blocks, no augmentation or drop
    path (the per-rank random streams would differ from one process's), clipping, accumulation,
    a global batch of 16 per step (8 per micro-batch) whatever the number of processes."""
    cfg = LazyConfig.load(VIT)
    return LazyConfig.apply_overrides(
        cfg,
        [
            "model.backbone.depth=2",
            "model.backbone.drop_path_rate=0.0",
            "dataloader.train.dataset.augment=False",
            "dataloader.train.total_batch_size=8",
            "train.accumulation=2",
            "train.clip_grad_norm=0.5",
            "train.max_iter=4",
            "train.checkpoint.period=2",
            "train.eval_period=0",
            "train.log_period=1",
            "train.param_group_stats_period=1",
            "train.device=cpu",
            "train.fsdp.shard=[Block]",
            f"train.output_dir={output_dir}",
            *overrides,
        ],
    )


def train(cfg, resume: bool) -> None:
    from tools import train_net

    torch.set_num_threads(1)
    args = argparse.Namespace(eval_only=False, resume=resume, grouping_notes=())
    train_net.main(cfg, args)


def fsdp_runs(root: str) -> None:
    """In each of two processes: a fresh FSDP run (root/fsdp) and its continuation under DDP
    (root/fsdp_then_ddp), a resume under FSDP of the one-process run in root/resumed (saved
    sharded by one process, regrouped now), then a count of gradient reductions per step with
    and without accumulation (root/syncs.json)."""
    import shutil

    from pgtrain.utils import comm

    train(vit_config(os.path.join(root, "fsdp"), "train.strategy=fsdp"), resume=False)
    if comm.is_main_process():
        shutil.copytree(os.path.join(root, "fsdp"), os.path.join(root, "fsdp_then_ddp"))
    comm.synchronize()
    train(vit_config(os.path.join(root, "fsdp_then_ddp"), "train.max_iter=6"), resume=True)
    train(
        vit_config(os.path.join(root, "resumed"), "train.strategy=fsdp", *REGROUPED),
        resume=True,
    )
    count_gradient_reductions(os.path.join(root, "syncs.json"))
    uneven_evaluation(os.path.join(root, "uneven_eval.json"), "train.strategy=fsdp")


def uneven_evaluation(out_path: str, *overrides: str) -> None:
    """Evaluates the toy model (seeded, sharded under FSDP with ``overrides``) on 129 samples in
    batches of 64 through the public `inference_on_dataset`, lockstep left to it: two processes
    get 2 and 1 batches. Writes the metrics (rank 0)."""
    from pgtrain.config import instantiate
    from pgtrain.engine import build_run
    from pgtrain.evaluation import inference_on_dataset
    from pgtrain.utils import comm

    cfg = LazyConfig.apply_overrides(
        LazyConfig.load("configs/quick/toy.py"),
        [
            "train.fsdp.shard=[stem,head]",
            "train.output_dir=",
            "train.device=cpu",
            "dataloader.test.dataset.num_samples=129",
            "dataloader.test.batch_size=64",
            *overrides,
        ],
    )
    torch.manual_seed(0)
    run = build_run(cfg, parallel=True)
    test = cfg.dataloader
    results = inference_on_dataset(run.model, instantiate(test.test), instantiate(test.evaluator))
    if comm.is_main_process():
        with open(out_path, "w") as f:
            json.dump(results, f)


def count_gradient_reductions(out_path: str, steps: int = 2) -> None:
    """Trains `steps` steps under FSDP with 1 and with 4 micro-batches per step, counting the
    reduce-scatters of gradients FSDP makes (torch.distributed's, wrapped to count)."""
    import torch.distributed as dist

    from pgtrain.engine import Trainer, build_run
    from pgtrain.utils import comm

    counts, original = {}, dist.reduce_scatter_single
    for accumulation in (1, 4):
        calls = [0]

        def counting(*args, calls=calls, **kwargs):
            calls[0] += 1
            return original(*args, **kwargs)

        cfg = vit_config("", "train.strategy=fsdp", f"train.accumulation={accumulation}")
        run = build_run(cfg, with_loader=True, parallel=True)
        trainer = Trainer(
            run.train_model,
            run.loader,
            run.optimizer,
            accumulation=accumulation,
            strategy=run.strategy,
        )
        dist.reduce_scatter_single = counting
        try:
            trainer.train(0, steps)
        finally:
            dist.reduce_scatter_single = original
        counts[accumulation] = calls[0]
    if comm.is_main_process():
        with open(out_path, "w") as f:
            json.dump(counts, f)


# The resume changes the grouping: the head's multiplier goes from 10 to 30 and the blocks'
# attention gets its own group.
REGROUPED = (
    "train.max_iter=6",
    "optimizer.params.rules=[{match: 'head.*', lr_mult: 30.0, group: head}, "
    "{match: 'backbone.blocks.*.attn.*', group: attn}]",
)
