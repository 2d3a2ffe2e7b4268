"""Random number generator states as tensors and plain values, for exact resume."""

import logging
import random
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

__all__ = ["capture_rng_states", "restore_rng_states"]

logger = logging.getLogger("pgtrain.checkpoint")


def capture_rng_states() -> dict[str, Any]:
    """Returns the states of python `random`, numpy, torch CPU and (if present) CUDA."""
    name, keys, pos, has_gauss, cached_gaussian = np.random.get_state(legacy=True)
    state: dict[str, Any] = {
        "python": random.getstate(),
        # numpy's state is an ndarray, which weights_only loading refuses; int64 holds uint32.
        "numpy": {
            "bit_generator": str(name),
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached_gaussian),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_states(state: dict[str, Any]) -> bool:
    """Restores what `capture_rng_states` returned; returns whether it did.

    A multi-process checkpoint holds every rank's states under ``per_rank``: each rank restores
    its own when the number of processes is the same. Otherwise only rank 0 restores (the
    top-level states are rank 0's): copying them to every rank would give all ranks the same
    random stream (same augmentations).
    """
    distributed = dist.is_available() and dist.is_initialized()
    rank, world = (dist.get_rank(), dist.get_world_size()) if distributed else (0, 1)
    per_rank = state.get("per_rank")
    if isinstance(per_rank, list | tuple) and len(per_rank) == world:
        state = per_rank[rank]
    elif rank != 0:
        if per_rank is not None:
            logger.warning(
                "RNG states of %d processes in the checkpoint, %d in this run: rank %d's random "
                "streams start anew",
                *(len(per_rank), world, rank),
            )
        return False
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    np_state = state["numpy"]
    np.random.set_state(
        (
            np_state["bit_generator"],
            np_state["keys"].numpy().astype(np.uint32),
            np_state["pos"],
            np_state["has_gauss"],
            np_state["cached_gaussian"],
        )
    )
    torch.set_rng_state(state["torch"])
    cuda_states = state.get("cuda")
    if cuda_states is not None and torch.cuda.is_available():
        if len(cuda_states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda_states)
        else:
            logger.warning(
                "CUDA RNG states not restored: the checkpoint has %d devices, this run %d",
                len(cuda_states),
                torch.cuda.device_count(),
            )
    return True
