"""Functions that tests run in processes started by `launch`; each writes what it saw to files.

Spawned processes import this module by name, so it lives at module level and imports nothing
from the tests.
"""

import json
import logging
import os
import random
import time

import numpy as np
import torch
from torch import nn

from pgtrain.engine.strategy.ddp import create_ddp_model
from pgtrain.utils import comm
from pgtrain.utils.env import per_rank_seed, seed_all_rng
from pgtrain.utils.logger import setup_logger

RUN_SEED = 42


def draw_random_numbers(seed: int) -> list[float]:
    """Seeds every generator with `seed` and returns one draw from each."""
    seed_all_rng(seed)
    return [random.random(), float(np.random.rand()), float(torch.rand(()))]


def _ddp_gradients(rank: int) -> dict[str, list[float]]:
    torch.manual_seed(rank)  # different initial weights per rank: DDP must make them equal
    model = create_ddp_model(nn.Linear(2, 1, bias=False))
    initial = model.module.weight.detach().flatten().tolist()
    model(torch.full((1, 2), float(rank + 1))).sum().backward()
    return {
        "type": type(model).__name__,
        "initial": initial,
        "grad": model.module.weight.grad.flatten().tolist(),
    }


def _barrier_check(out_dir: str, rank: int) -> bool:
    """Returns whether rank 0 sees the file rank 1 writes late, right after a barrier."""
    marker = os.path.join(out_dir, "late_marker")
    if rank == 1:
        time.sleep(0.5)
        with open(marker, "w") as f:
            f.write("written before the barrier")
    comm.synchronize()
    return os.path.exists(marker)


def check_collectives(out_dir: str) -> None:
    """Exercises the comm helpers, seeding, logging and DDP; writes ``result{rank}.json``."""
    rank = comm.get_rank()
    setup_logger(out_dir, rank=rank, color=False)
    log = logging.getLogger("pgtrain.launch_test")
    log.info("info from rank %d", rank)
    log.warning("warning from rank %d", rank)
    log.debug("debug from rank %d", rank)

    seed = per_rank_seed(RUN_SEED, rank)
    values = {"a": torch.tensor(float(rank)), "b": torch.tensor([rank, 2 * rank])}
    result = {
        "rank": rank,
        "world_size": comm.get_world_size(),
        "local_rank": comm.get_local_rank(),
        "local_size": comm.get_local_size(),
        "is_main": comm.is_main_process(),
        "num_threads": torch.get_num_threads(),
        "draws": draw_random_numbers(seed),
        "draws_again": draw_random_numbers(seed),
        "all_gather": comm.all_gather({"rank": rank, "name": f"r{rank}"}),
        "gather": comm.gather(rank * 10, dst=1),
        "mean": {k: v.tolist() for k, v in comm.reduce_dict(values).items()},
        "sum": {k: v.tolist() for k, v in comm.reduce_dict(values, average=False).items()},
        "barrier_saw_marker": _barrier_check(out_dir, rank),
        "shared_seed": comm.shared_random_seed(),
        "ddp": _ddp_gradients(rank),
    }
    with open(os.path.join(out_dir, f"result{rank}.json"), "w") as f:
        json.dump(result, f)


def fail_on_rank_1(out_dir: str) -> None:
    """Rank 1 raises while rank 0 waits for it in a barrier."""
    if comm.get_rank() == 1:
        raise ValueError("rank 1 failed on purpose")
    comm.synchronize()  # never returns: rank 1 does not arrive
    with open(os.path.join(out_dir, "rank0_passed_barrier"), "w") as f:
        f.write("unexpected")


def count_gradient_allreduces(out_dir: str) -> None:
    """Two steps of 4 micro-batches on a DDP model, plain and compiled (torch.compile's wrapper
    around DDP), with the run's strategy: the gradient all-reduces DDP made, per mode."""
    from pgtrain.engine import Strategy, Trainer

    class Quadratic(nn.Module):
        def __init__(self):
            super().__init__()
            self.layer = nn.Linear(4, 2)

        def forward(self, batch):
            return {"loss": self.layer(batch).pow(2).mean()}

    def batches():
        while True:
            yield torch.randn(3, 4)

    counts = {}
    for mode in ("plain", "compiled"):
        torch.manual_seed(0)
        ddp, calls = create_ddp_model(Quadratic()), []

        def count(state, bucket, calls=calls):
            calls.append(1)
            done = torch.futures.Future()
            done.set_result(bucket.buffer())
            return done

        ddp.register_comm_hook(None, count)
        model = torch.compile(ddp, backend="eager") if mode == "compiled" else ddp
        optimizer = torch.optim.SGD(ddp.parameters(), lr=0.1)
        trainer = Trainer(model, batches(), optimizer, accumulation=4, strategy=Strategy())
        trainer._data_iter = batches()
        for _ in range(2):
            trainer.run_step()
        counts[mode] = len(calls)
    if comm.is_main_process():
        with open(os.path.join(out_dir, "allreduces.json"), "w") as f:
            json.dump(counts, f)
