"""FSDP2: sharding a model over the processes (``train.strategy=fsdp``, ``train.fsdp``).

FSDP shards each module ``train.fsdp.shard`` names (a class name such as ``Block``, or a glob of
module names such as ``backbone.blocks.*``; the outermost match is sharded, not its children),
then the whole model, so the rest (embeddings, head) is one more unit.
"""

import fnmatch
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from pgtrain.config.schema import setting
from pgtrain.engine.strategy.device import PRECISION_DTYPES
from pgtrain.errors import ConfigError
from pgtrain.utils import comm
from pgtrain.utils.suggest import did_you_mean

__all__ = ["FSDPSettings", "shard_model", "shard_units"]

logger = logging.getLogger(__name__)

_DType = Literal["bf16", "fp16", "fp32"]


@dataclass
class FSDPSettings:
    """``train.fsdp``: how FSDP2 shards the model (under ``train.strategy=fsdp``)."""

    shard: list[str] = setting(
        [], "modules sharded as units: class names ('Block') or globs of module names"
    )
    reshard_after_forward: bool = setting(True, "free the gathered parameters after the forward")
    param_dtype: _DType | None = setting(
        None, "the dtype parameters compute in", null="keep the parameters' own"
    )
    reduce_dtype: _DType | None = setting(
        None, "the dtype gradients are reduced in", null="keep the parameters' own"
    )


def shard_model(
    model: nn.Module,
    *,
    shard: Sequence[str] = (),
    reshard_after_forward: bool = True,
    param_dtype: str | None = None,
    reduce_dtype: str | None = None,
) -> nn.Module:
    """Shards `model` with FSDP2 over all processes: each module `shard` names, then the root.

    Args:
        model: the model, on its device (CPU with gloo, the local GPU with NCCL), weights loaded;
            rank 0's weights and buffers are broadcast to the others before sharding.
        shard: class names or globs of module names; each is a unit whose parameters are
            gathered for its forward and backward only (per transformer block, say).
        reshard_after_forward: free a unit's gathered parameters after its forward (less memory;
            they are gathered again for the backward); False keeps them until the backward.
        param_dtype: "bf16", "fp16" or "fp32": the dtype of the gathered parameters that forward
            and backward compute in (None: the parameters' own). The sharded parameters and the
            optimizer state stay in their own dtype.
        reduce_dtype: the dtype gradients are reduced in (None: `param_dtype`'s).

    Raises:
        ConfigError: a name in `shard` matches no module, or an unknown dtype.
    """
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    device = next(model.parameters()).device
    mesh = init_device_mesh(device.type, (comm.get_world_size(),))
    # Every process keeps its slice of its own copy: the copies must be equal first (each rank
    # seeds differently, so their initializations differ). DDP does the same when it wraps.
    with torch.no_grad():
        for tensor in model.state_dict().values():
            torch.distributed.broadcast(tensor, src=0)
    policy = MixedPrecisionPolicy(
        param_dtype=_dtype(param_dtype, "param_dtype"),
        reduce_dtype=_dtype(reduce_dtype, "reduce_dtype"),
    )
    units = shard_units(model, shard)
    # Children before parents: fully_shard of a parent leaves the sharded children as they are.
    for name in reversed(units):
        fully_shard(
            model.get_submodule(name),
            mesh=mesh,
            reshard_after_forward=reshard_after_forward,
            mp_policy=policy,
        )
    # The root: its forward is the last to end, so its parameters need not be freed after it.
    fully_shard(model, mesh=mesh, reshard_after_forward=False, mp_policy=policy)
    logger.info(
        "FSDP: %d units (%s) and the root, over %d processes",
        len(units),
        ", ".join(shard) or "only the root",
        comm.get_world_size(),
    )
    return model


def shard_units(model: nn.Module, shard: Sequence[str]) -> list[str]:
    """Returns the names of the modules `shard` selects, outermost matches only, in model order.

    Raises:
        ConfigError: an entry of `shard` matches no module.
    """
    if isinstance(shard, str):
        shard = [shard]
    units: list[str] = []
    matched = dict.fromkeys(shard, False)
    for name, module in model.named_modules():
        if not name or any(name.startswith(f"{unit}.") for unit in units):
            continue
        hits = [s for s in shard if type(module).__name__ == s or fnmatch.fnmatchcase(name, s)]
        for hit in hits:
            matched[hit] = True
        if hits:
            units.append(name)
    for entry, hit in matched.items():
        if not hit:
            classes = sorted({type(m).__name__ for m in model.modules()})
            raise ConfigError(
                f"train.fsdp.shard: {entry!r} matches no module class or module name"
                f"{did_you_mean(entry, classes)}; the model's classes: {', '.join(classes)}"
            )
    return units


def _dtype(name: str | None, key: str) -> torch.dtype | None:
    if name is None:
        return None
    if name not in PRECISION_DTYPES:
        raise ConfigError(
            f"train.fsdp.{key}={name!r} is not a dtype; use one of {list(PRECISION_DTYPES)} or null"
        )
    return PRECISION_DTYPES[name]
