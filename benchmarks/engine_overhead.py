"""Trainer overhead: time per iteration with the default hooks vs. a bare hand-written loop.

    .venv/bin/python benchmarks/engine_overhead.py [--iters 200] [--repeats 9]

Both loops run the same model, data, optimizer and LR schedule in this process, alternating, and
the script prints the median ratio over the repeats (target <= 1.03). No threshold is asserted.
"""

import argparse
import logging
import statistics
import tempfile
import time

import torch

from pgtrain.checkpoint import Checkpointer
from pgtrain.data import ToyClassificationDataset, build_train_loader
from pgtrain.engine import (
    EvalHook,
    IterationTimer,
    LRSchedulerHook,
    NonFiniteLossGuard,
    PeriodicCheckpointer,
    PeriodicWriter,
    Trainer,
)
from pgtrain.modeling import MLPClassifier
from pgtrain.solver import LRMultiplier, build_schedule
from pgtrain.utils.writers import ConsoleWriter, JSONWriter


def make(seed: int = 0):
    torch.manual_seed(seed)
    model = MLPClassifier(in_dim=64, hidden_dim=512, depth=4, num_classes=10)
    data = ToyClassificationDataset(num_samples=4096, dim=64, num_classes=10)
    loader = build_train_loader(data, total_batch_size=256, seed=seed)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
    return model, loader, optimizer


def bare_loop(iters: int) -> float:
    model, loader, optimizer = make()
    scheduler = LRMultiplier(optimizer, build_schedule(name="cosine"), iters)
    data = iter(loader)
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
    model, loader, optimizer = make()
    scheduler = LRMultiplier(optimizer, build_schedule(name="cosine"), iters)
    trainer = Trainer(model, loader, optimizer)
    checkpointer = Checkpointer(model, out_dir, trainer=trainer)
    trainer.register_hooks(
        [
            IterationTimer(),
            NonFiniteLossGuard(),
            LRSchedulerHook(scheduler),
            PeriodicCheckpointer(checkpointer, period=10**9, max_iter=10**9),  # period > run
            EvalHook(0, dict),  # evaluates (a no-op) only after the last iteration
            PeriodicWriter([ConsoleWriter(iters), JSONWriter(f"{out_dir}/metrics.json")], 20),
        ]
    )
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
