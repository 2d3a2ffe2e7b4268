"""FSDP2 vs DDP on the CPU: two gloo processes train the ViT with layer decay for 20 steps each way.

    .venv/bin/python benchmarks/fsdp_vs_ddp.py [--steps 20] [--depth 4] [--repeats 3]

Both runs are built by `pgtrain.engine.build_run` from projects/vit/config.py (layer decay 0.75,
a 10x head; AdamW), with the same initial weights and batches, in the same two processes one after
the other. Printed: the largest weight difference after the steps (float tolerance), the
parameter + optimizer-state bytes each process holds (FSDP / DDP, about 0.5 expected), the median
time per step (FSDP / DDP), and the time to save and load a checkpoint: sharded (every process
writes its shards) against the single file (rank 0 gathers nothing: DDP holds the whole model).
No threshold is asserted.
"""

import argparse
import json
import os
import statistics
import tempfile
import time

import torch

from pgtrain.checkpoint import Checkpointer
from pgtrain.checkpoint.sharded import read_sharded
from pgtrain.config import LazyConfig, instantiate
from pgtrain.engine import Trainer, build_run, launch
from pgtrain.utils import comm, sharding

VIT = "projects/vit/config.py"


def config(strategy: str, depth: int, output_dir: str):
    cfg = LazyConfig.load(VIT)
    return LazyConfig.apply_overrides(
        cfg,
        [
            f"model.backbone.depth={depth}",
            "model.backbone.drop_path_rate=0.0",
            "dataloader.train.dataset.augment=False",
            "dataloader.train.total_batch_size=16",
            f"train.strategy={strategy}",
            "train.device=cpu",
            f"train.output_dir={output_dir}",
        ],
    )


def held_bytes(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> int:
    """Bytes of parameters and optimizer state this process holds (its shards under FSDP)."""
    local = sharding.local_view
    total = sum(local(p).numel() * p.element_size() for p in model.parameters())
    for state in optimizer.state.values():
        for value in state.values():
            if isinstance(value, torch.Tensor):
                total += local(value).numel() * value.element_size()
    return total


def measure(strategy: str, steps: int, depth: int, repeats: int, folder: str) -> dict:
    torch.manual_seed(0)
    run = build_run(config(strategy, depth, folder), with_loader=True, parallel=True)
    trainer = Trainer(run.train_model, run.loader, run.optimizer, strategy=run.strategy)
    times = []
    trainer.train(0, 1)  # warm-up step (state allocated)
    for i in range(1, steps):
        comm.synchronize()
        start = time.perf_counter()
        trainer.train(i, i + 1)
        comm.synchronize()
        times.append(time.perf_counter() - start)
    held = held_bytes(run.model, run.optimizer)
    run.checkpointer.register("trainer", trainer)
    saves, loads = [], []
    for r in range(repeats):
        comm.synchronize()
        start = time.perf_counter()
        path = run.checkpointer.save(f"model_{r:07d}", iteration=steps - 1)
        comm.synchronize()
        saves.append(time.perf_counter() - start)
        path = comm.all_gather(path)[0]
        # What a resume does on each process: read the checkpoint, load the unsharded model.
        fresh = Checkpointer(instantiate(run.cfg.model))
        comm.synchronize()
        start = time.perf_counter()
        fresh.load(path, checkpointables=[])
        comm.synchronize()
        loads.append(time.perf_counter() - start)
    return {
        "step_s": statistics.median(times),
        "held_bytes": held,
        "save_s": statistics.median(saves),
        "load_s": statistics.median(loads),
        "checkpoint": path,
    }


def worker(folder: str, steps: int, depth: int, repeats: int) -> None:
    torch.set_num_threads(1)
    results = {}
    results["ddp"] = measure("ddp", steps, depth, repeats, os.path.join(folder, "ddp"))
    results["fsdp"] = measure("fsdp", steps, depth, repeats, os.path.join(folder, "fsdp"))
    if comm.is_main_process():
        a = torch.load(results["ddp"]["checkpoint"], weights_only=True)["model"]
        b = read_sharded(results["fsdp"]["checkpoint"])["model"]
        results["max_weight_diff"] = max(float((a[k] - b[k]).abs().max()) for k in a)
        results["num_params"] = sum(v.numel() for v in a.values())
    every = comm.all_gather({k: results[k]["held_bytes"] for k in ("ddp", "fsdp")})
    if comm.is_main_process():
        results["held_per_rank"] = every
        with open(os.path.join(folder, "results.json"), "w") as f:
            json.dump(results, f)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--depth", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    with tempfile.TemporaryDirectory() as tmp:
        launch(worker, 2, args=(tmp, args.steps, args.depth, args.repeats), backend="gloo")
        with open(os.path.join(tmp, "results.json")) as f:
            r = json.load(f)
    ddp, fsdp = r["ddp"], r["fsdp"]
    mib = 2**20
    print(
        f"ViT depth {args.depth}, {r['num_params']:,} parameters, AdamW with layer decay, "
        "2 gloo processes"
    )
    print(f"max |weight difference| after {args.steps} steps: {r['max_weight_diff']:.2e}")
    for rank, held in enumerate(r["held_per_rank"]):
        print(
            f"rank {rank}: parameters + optimizer state: DDP {held['ddp'] / mib:.1f} MiB, FSDP "
            f"{held['fsdp'] / mib:.1f} MiB, ratio {held['fsdp'] / held['ddp']:.3f}"
        )
    print(
        f"time per step (median): DDP {ddp['step_s'] * 1e3:.0f} ms, FSDP "
        f"{fsdp['step_s'] * 1e3:.0f} ms, ratio {fsdp['step_s'] / ddp['step_s']:.2f}"
    )
    print(
        f"checkpoint save (median of {args.repeats}): single file {ddp['save_s'] * 1e3:.0f} ms, "
        f"sharded {fsdp['save_s'] * 1e3:.0f} ms, ratio {fsdp['save_s'] / ddp['save_s']:.2f}"
    )
    print(
        f"checkpoint load (median of {args.repeats}): single file {ddp['load_s'] * 1e3:.0f} ms, "
        f"sharded {fsdp['load_s'] * 1e3:.0f} ms, ratio {fsdp['load_s'] / ddp['load_s']:.2f}"
    )


if __name__ == "__main__":
    main()
