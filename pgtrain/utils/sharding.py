"""Sharded tensors (FSDP2's DTensors): the one place that tells a shard from a whole tensor.

Modules below the engine (checkpoints, optimizer state, collectives) meet tensors that may be
shards; they ask here. Whether the *model* is sharded is the run's strategy's answer
(`pgtrain.engine.strategy.Strategy`), never found by probing the model.
"""

from typing import Any

import torch

__all__ = ["full_value", "is_sharded", "local_view", "shard_like"]


def _dtensor_class() -> type | None:
    try:
        from torch.distributed.tensor import DTensor
    except ImportError:  # a torch built without distributed support
        return None
    return DTensor


def is_sharded(value: Any) -> bool:
    """Whether `value` is a sharded tensor (a DTensor): each process holds a slice of it."""
    cls = _dtensor_class()
    return cls is not None and isinstance(value, cls)


def local_view(value: Any) -> Any:
    """This process's slice of a sharded tensor; anything else as it is."""
    return value.to_local() if is_sharded(value) else value


def full_value(value: torch.Tensor | float) -> float:
    """The float of a one-element tensor; a sharded result (a gradient norm under FSDP, say) is
    reduced over its processes first, so every rank gets the same value."""
    if is_sharded(value):
        value = value.full_tensor()
    return float(value)


def shard_like(value: torch.Tensor, param: torch.Tensor) -> torch.Tensor:
    """`value` (a whole tensor of `param`'s shape) cut as `param` is sharded: this process keeps
    its own slice, whichever number of processes saved it; unchanged when `param` is whole."""
    if not is_sharded(param) or is_sharded(value) or value.shape != param.shape:
        return value
    from torch.distributed.tensor import distribute_tensor

    return distribute_tensor(value, param.device_mesh, param.placements, src_data_rank=None)
