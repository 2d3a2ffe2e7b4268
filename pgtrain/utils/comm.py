"""Rank, world size and collective helpers that also work when torch.distributed is not in use.

Every helper checks whether a default process group exists; without one (a single process, world
size 1) they return the single-process answer without communicating, so training code calls them
unconditionally. With a process group, every rank must call the collective helpers
(`synchronize`, `all_gather`, `gather`, `reduce_dict`, `shared_random_seed`) in the same order.
"""

import os
import random
from typing import Any

import torch
import torch.distributed as dist

__all__ = [
    "get_world_size",
    "get_rank",
    "get_local_rank",
    "get_local_size",
    "is_main_process",
    "synchronize",
    "all_gather",
    "gather",
    "reduce_dict",
    "shared_random_seed",
    "create_local_process_group",
    "get_local_process_group",
    "unwrap_model",
]

# The process group of this machine's processes, set by `create_local_process_group` (which
# `launch` calls). Under torchrun the LOCAL_RANK / LOCAL_WORLD_SIZE variables answer instead.
_LOCAL_PROCESS_GROUP: dist.ProcessGroup | None = None


def unwrap_model(model: torch.nn.Module) -> torch.nn.Module:
    """The model inside DistributedDataParallel / DataParallel and ``torch.compile`` wrappers
    (in any order), or `model` itself."""
    wrappers = (torch.nn.parallel.DistributedDataParallel, torch.nn.DataParallel)
    while True:
        if isinstance(model, wrappers):
            model = model.module
        elif hasattr(model, "_orig_mod") and type(model).__name__ == "OptimizedModule":
            model = model._orig_mod
        else:
            return model


def _is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def get_world_size() -> int:
    """Returns the number of processes in the default process group (1 when not distributed)."""
    return dist.get_world_size() if _is_distributed() else 1


def get_rank() -> int:
    """Returns this process's global rank (0 when not distributed)."""
    return dist.get_rank() if _is_distributed() else 0


def get_local_rank() -> int:
    """Returns this process's rank among the processes of its machine.

    Under `launch` it comes from the machine's process group, under torchrun from ``LOCAL_RANK``;
    without distributed training it is 0. On CUDA it is the index of this process's GPU.
    """
    if not _is_distributed():
        return 0
    if _LOCAL_PROCESS_GROUP is not None:
        return dist.get_rank(group=_LOCAL_PROCESS_GROUP)
    return int(os.environ.get("LOCAL_RANK", 0))


def get_local_size() -> int:
    """Returns the number of processes on this machine (1 when not distributed)."""
    if not _is_distributed():
        return 1
    if _LOCAL_PROCESS_GROUP is not None:
        return dist.get_world_size(group=_LOCAL_PROCESS_GROUP)
    return int(os.environ.get("LOCAL_WORLD_SIZE", 1))


def is_main_process() -> bool:
    """Returns whether this is global rank 0, the process that prints, writes and saves."""
    return get_rank() == 0


def create_local_process_group(num_processes_per_machine: int) -> None:
    """Creates the process group of this machine's processes; every rank must call it.

    Ranks are laid out machine by machine (global rank = machine rank * processes per machine +
    local rank), as `launch` assigns them. With a single machine the default group is reused, so
    the call costs nothing.

    Args:
        num_processes_per_machine: processes on each machine; must divide the world size.
    """
    global _LOCAL_PROCESS_GROUP
    world_size = get_world_size()
    if num_processes_per_machine < 1 or world_size % num_processes_per_machine != 0:
        raise ValueError(
            f"num_processes_per_machine={num_processes_per_machine} does not divide the world "
            f"size {world_size}; pass the number of processes launched on each machine"
        )
    if num_processes_per_machine == world_size:
        _LOCAL_PROCESS_GROUP = dist.group.WORLD
        return
    machine_rank = get_rank() // num_processes_per_machine
    # new_group is collective: every rank creates every machine's group, keeping only its own.
    for machine in range(world_size // num_processes_per_machine):
        first = machine * num_processes_per_machine
        group = dist.new_group(list(range(first, first + num_processes_per_machine)))
        if machine == machine_rank:
            _LOCAL_PROCESS_GROUP = group


def get_local_process_group() -> dist.ProcessGroup | None:
    """Returns the group created by `create_local_process_group`, or None if there is none."""
    return _LOCAL_PROCESS_GROUP if _is_distributed() else None


def synchronize() -> None:
    """Blocks until every rank reaches this call (a barrier); a no-op in a single process."""
    if get_world_size() == 1:
        return
    if dist.get_backend() == dist.Backend.NCCL:
        # Naming the device avoids NCCL guessing it (and warning) from the rank.
        dist.barrier(device_ids=[torch.cuda.current_device()])
    else:
        dist.barrier()


def all_gather(obj: Any) -> list[Any]:
    """Gathers a picklable object from every rank.

    Args:
        obj: any picklable object (tensors are pickled too; under NCCL through the current GPU).

    Returns:
        The objects of all ranks, in rank order; ``[obj]`` in a single process.
    """
    world_size = get_world_size()
    if world_size == 1:
        return [obj]
    gathered: list[Any] = [None] * world_size
    dist.all_gather_object(gathered, obj)
    return gathered


def gather(obj: Any, dst: int = 0) -> list[Any]:
    """Gathers a picklable object from every rank onto rank `dst`.

    Args:
        obj: any picklable object.
        dst: the global rank that receives the objects.

    Returns:
        On `dst`, the objects of all ranks in rank order; on other ranks an empty list.
    """
    world_size = get_world_size()
    if world_size == 1:
        return [obj]
    if get_rank() == dst:
        gathered: list[Any] = [None] * world_size
        dist.gather_object(obj, gathered, dst=dst)
        return gathered
    dist.gather_object(obj, None, dst=dst)
    return []


def reduce_dict(d: dict[str, torch.Tensor], average: bool = True) -> dict[str, torch.Tensor]:
    """Sums (or averages) tensors with the same keys across ranks; every rank gets the result.

    All ranks must pass the same keys with tensors of the same shapes on the same kind of device
    (the current GPU under NCCL). The values travel in one collective; the results are detached
    and have a floating dtype (at least float32).

    Args:
        d: metric name -> tensor, e.g. the loss terms of one iteration.
        average: divide the sum by the world size.

    Returns:
        A new dict with the reduced tensors; in a single process, `d`'s tensors, detached.
    """
    if get_world_size() == 1 or not d:
        return {k: v.detach() for k, v in d.items()}
    names = sorted(d)  # dict order may differ between ranks; sorted order does not
    dtype = torch.float32
    for name in names:
        dtype = torch.promote_types(dtype, d[name].dtype)
    flat = torch.cat([d[name].detach().reshape(-1).to(dtype) for name in names])
    dist.all_reduce(flat)
    if average:
        flat /= get_world_size()
    chunks = flat.split([d[name].numel() for name in names])
    return {name: chunk.reshape(d[name].shape) for name, chunk in zip(names, chunks, strict=True)}


def shared_random_seed() -> int:
    """Returns a random integer in [0, 2**31) that is the same on every rank.

    Rank 0 draws it from Python's `random` module (so a seeded run gets the same value again) and
    the other ranks adopt it, e.g. to shuffle a dataset identically everywhere.
    """
    return all_gather(random.randrange(2**31))[0]
