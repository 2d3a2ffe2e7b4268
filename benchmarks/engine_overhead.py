"""Trainer overhead: time per iteration with the default hooks vs. a bare hand-written loop.

    .venv/bin/python benchmarks/engine_overhead.py [--iters 200] [--repeats 9]

Both loops run the same model, data, optimizer and LR schedule in this process, alternating, and
the script prints the median ratio over the repeats (target <= 1.03). No threshold is asserted.
"""

import argparse
import logging
import os
import statistics
import tempfile
import time

import torch

from pgtrain.config import LazyConfig
from pgtrain.engine import Trainer, build_run, default_hooks

TOY = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs", "quick", "toy.py"
)


def make(iters: int, out_dir: str = ""):
    """The run both loops train (configs/quick/toy.py, a wider MLP), built as train_net builds
    it: model, loader, optimizer (the config's two groups) and LR schedule."""
    torch.manual_seed(0)
    cfg = LazyConfig.apply_overrides(
        LazyConfig.load(TOY),
        [
            "model.in_dim=64",
            "model.hidden_dim=512",
            "model.depth=4",
            "model.num_classes=10",
            "dataloader.train.dataset.num_samples=4096",
            "dataloader.train.dataset.dim=64",
            "dataloader.train.dataset.num_classes=10",
            "dataloader.train.total_batch_size=256",
            f"train.max_iter={iters}",
            f"train.output_dir={out_dir}",
            "train.checkpoint.period=1000000000",  # no checkpoint inside the timed run
            "train.device=cpu",
        ],
    )
    return build_run(cfg, with_loader=True)


def bare_loop(iters: int) -> float:
    run = make(iters)
    model, optimizer, scheduler, data = run.model, run.optimizer, run.scheduler, iter(run.loader)
    model.train()
    start = time.perf_counter()
    for _ in range(iters):
        loss = sum(model(next(data)).values())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
    return (time.perf_counter() - start) / iters


def trainer_loop(iters: int, out_dir: str) -> float:
    """The trainer with train_net's hooks (`default_hooks`; evaluation off)."""
    run = make(iters, out_dir)
    trainer = Trainer(run.model, run.loader, run.optimizer)
    run.checkpointer.register("trainer", trainer)
    trainer.register_hooks(default_hooks(run))
    start = time.perf_counter()
    trainer.train(0, iters)
    return (time.perf_counter() - start) / iters


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iters", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)  # one thread: far less run-to-run noise on 2 cores
    logging.disable(logging.INFO)  # the console writer's lines are not what is measured here
    bare_loop(10), trainer_loop(10, tempfile.mkdtemp())  # warm up allocator and caches
    ratios, bare_times, trainer_times = [], [], []
    for repeat in range(args.repeats):
        # Alternate which loop runs first, so drift in machine load does not favour one.
        with tempfile.TemporaryDirectory() as out_dir:
            if repeat % 2:
                t_bare = bare_loop(args.iters)
                t_trainer = trainer_loop(args.iters, out_dir)
            else:
                t_trainer = trainer_loop(args.iters, out_dir)
                t_bare = bare_loop(args.iters)
        ratios.append(t_trainer / t_bare)
        bare_times.append(t_bare)
        trainer_times.append(t_trainer)
    print(
        f"threads: {torch.get_num_threads()}, iterations per run: {args.iters}, "
        f"runs: {args.repeats}"
    )
    print(f"bare loop:   median {statistics.median(bare_times) * 1e3:.2f} ms/it")
    print(f"trainer:     median {statistics.median(trainer_times) * 1e3:.2f} ms/it")
    print(f"ratios: {' '.join(f'{r:.3f}' for r in ratios)}")
    print(f"median ratio trainer/bare: {statistics.median(ratios):.3f} (target <= 1.03)")


if __name__ == "__main__":
    main()
