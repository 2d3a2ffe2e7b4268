"""Mask R-CNN training throughput: pgtrain's trainer vs. a bare torchvision-style loop.

    .venv/bin/python benchmarks/maskrcnn_throughput.py [--iters 30] [--repeats 5] [--device cuda]

Both loops train the main job's model (projects/maskrcnn/config.py: slim MobileNetV2-FPN Mask
R-CNN, 256 px, batch 4) on the same shapes data with the same optimizer, alternating in one
process; the trainer runs with the default hooks of tools/train_net.py (evaluation and
checkpoints far apart). Prints images per second of each and the median ratio pgtrain / bare
(target >= 0.97). No threshold is asserted.
"""

import argparse
import copy
import logging
import os
import statistics
import tempfile
import time

import torch

from pgtrain.config import LazyConfig
from pgtrain.engine import HookBase, Trainer, build_run, default_hooks

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def build(cfg):
    """The run tools/train_net.py trains, seeded identically for both loops."""
    torch.manual_seed(0)
    return build_run(cfg, with_loader=True)


def bare_loop(cfg, iters: int, warmup: int) -> float:
    """The torchvision reference-script loop: images/s after `warmup` iterations."""
    run = build(cfg)
    model, loader, optimizer, scheduler = run.model, run.loader, run.optimizer, run.scheduler
    data = iter(loader)
    model.train()
    device = next(model.parameters()).device
    for i in range(warmup + iters):
        if i == warmup:
            _sync(device)
            start = time.perf_counter()
        batch = next(data)
        images = [img.to(device).float().div(255) for img, _ in batch]
        targets = [
            {
                "boxes": t["boxes"].as_subclass(torch.Tensor).to(device),
                "labels": t["labels"].to(device),
                "masks": t["masks"].as_subclass(torch.Tensor).to(device),
            }
            for _, t in batch
        ]
        loss_dict = super(type(model), model).forward(images, targets)
        loss = sum(loss_dict.values())
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.train.clip_grad_norm)
        optimizer.step()
        scheduler.step()
    _sync(device)
    return iters * loader.batch_sampler.batch_size / (time.perf_counter() - start)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":  # CUDA runs ahead of the host: time what finished
        torch.cuda.synchronize(device)


def trainer_loop(cfg, iters: int, warmup: int, out_dir: str) -> float:
    """pgtrain's Trainer with the default hooks: images/s after `warmup` iterations."""
    # train_net's hooks (`default_hooks`) on the same run, its checkpoints far apart, no evaluation
    run = build(_with(cfg, out_dir, warmup + iters))
    trainer = Trainer(run.model, run.loader, run.optimizer, clip_grad_norm=cfg.train.clip_grad_norm)
    run.checkpointer.register("trainer", trainer)
    times = []

    class Clock(HookBase):
        def before_step(self):
            if self.trainer.iter == warmup:
                _sync(next(run.model.parameters()).device)
                times.append(time.perf_counter())

    trainer.register_hooks([Clock(), *default_hooks(run)])
    trainer.train(0, warmup + iters)
    _sync(next(run.model.parameters()).device)
    return iters * run.loader.batch_sampler.batch_size / (time.perf_counter() - times[0])


def _with(cfg, out_dir: str, iters: int):
    """`cfg` training `iters` iterations into `out_dir`, checkpoints and evaluation far apart."""
    return LazyConfig.apply_overrides(
        copy.deepcopy(cfg),
        [
            f"train.output_dir={out_dir}",
            f"train.max_iter={iters}",
            "train.checkpoint.period=1000000000",
            "train.eval_period=0",
        ],
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iters", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    args = parser.parse_args()
    logging.disable(logging.INFO)
    cfg = LazyConfig.load(os.path.join(ROOT, "projects", "maskrcnn", "config.py"))
    cfg.train.device = args.device
    bare, ours, ratios = [], [], []
    for repeat in range(args.repeats):
        with tempfile.TemporaryDirectory() as out_dir:
            runs = [
                lambda: bare_loop(cfg, args.iters, args.warmup),
                lambda d=out_dir: trainer_loop(cfg, args.iters, args.warmup, d),
            ]
            if repeat % 2:  # alternate the order so drift in machine load favours neither
                b, t = runs[0](), runs[1]()
            else:
                t, b = runs[1](), runs[0]()
        bare.append(b)
        ours.append(t)
        ratios.append(t / b)
    print(f"iterations per run: {args.iters} (+{args.warmup} warm-up), runs: {args.repeats}")
    print(f"bare torchvision loop: median {statistics.median(bare):.2f} images/s")
    print(f"pgtrain trainer:       median {statistics.median(ours):.2f} images/s")
    print(f"ratios: {' '.join(f'{r:.3f}' for r in ratios)}")
    print(f"median ratio pgtrain / bare: {statistics.median(ratios):.3f} (target >= 0.97)")


if __name__ == "__main__":
    main()
