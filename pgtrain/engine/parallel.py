"""The run's data-parallel strategy: DDP (replicated weights) or FSDP2 (sharded weights).

``train.strategy`` chooses; `parallelize` applies it once, in `build_run`, after the weights are
loaded and before the param groups are built. FSDP2's ``fully_shard`` swaps each parameter for a
sharded DTensor of the same name and global shape, so the groups are built by name on the sharded
model exactly as on a single process: every builder, rule, audit, table and per-group LR log is
the same. DDP keeps the parameters and wraps the model; the groups are built on the model inside.

FSDP shards each module ``train.fsdp.shard`` names (a class name such as ``Block``, or a glob of
module names such as ``backbone.blocks.*``; the outermost match is sharded, not its children),
then the whole model, so the rest (embeddings, head) is one more unit.
"""

import fnmatch
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

from pgtrain.config.schema import section, setting
from pgtrain.engine.ddp import DDPSettings, create_ddp_model
from pgtrain.engine.trainer import PRECISION_DTYPES
from pgtrain.errors import ConfigError
from pgtrain.utils import comm
from pgtrain.utils.suggest import did_you_mean

__all__ = [
    "FSDPSettings",
    "ParallelSettings",
    "STRATEGIES",
    "parallelize",
    "shard_model",
    "sharded_checkpoints",
    "strategy_of",
]

logger = logging.getLogger(__name__)

STRATEGIES = ("ddp", "fsdp")
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


@dataclass
class ParallelSettings:
    """How the processes share the model: replicated (DDP) or sharded (FSDP2)."""

    strategy: Literal["ddp", "fsdp"] = setting(
        "ddp", "'ddp' replicates the model; 'fsdp' shards parameters, gradients, optimizer state"
    )
    ddp: DDPSettings = section(DDPSettings, "DistributedDataParallel's options")
    fsdp: FSDPSettings = section(FSDPSettings, "FSDP2's options")


def parallelize(model: nn.Module, train: Mapping[str, Any]) -> nn.Module:
    """Applies ``train.strategy`` to `model`; returns the module to train.

    ``"ddp"`` wraps `model` in DistributedDataParallel (``train.ddp`` options) when there is more
    than one process; ``"fsdp"`` shards `model` in place (``train.fsdp``) whenever a process group
    exists, one process included (its mixed precision still applies), and returns it.

    Raises:
        ConfigError: an unknown strategy, or an FSDP option that does not fit the model.
    """
    if strategy_of(train) == "ddp":
        return create_ddp_model(model, **(train.get("ddp") or {}))
    if not torch.distributed.is_initialized():
        logger.info("train.strategy=fsdp in a single process without a process group: not sharded")
        return model
    return shard_model(model, **(train.get("fsdp") or {}))


def strategy_of(train: Mapping[str, Any]) -> str:
    """``train.strategy``, checked.

    Raises:
        ConfigError: not one of `STRATEGIES`.
    """
    strategy = train.get("strategy", "ddp")
    if strategy not in STRATEGIES:
        raise ConfigError(
            f"train.strategy={strategy!r} is not a strategy"
            f"{did_you_mean(str(strategy), STRATEGIES)}; use one of {list(STRATEGIES)}"
        )
    return strategy


def sharded_checkpoints(train: Mapping[str, Any]) -> bool:
    """Whether the run saves sharded checkpoints: ``train.checkpoint.format`` "sharded", or
    "auto" under FSDP (each process writes its shards; no process gathers the whole model).

    Raises:
        ConfigError: an unknown format or strategy, or "file" under FSDP.
    """
    fmt = (train.get("checkpoint") or {}).get("format", "auto")
    formats = ("auto", "file", "sharded")
    if fmt not in formats:
        raise ConfigError(
            f"train.checkpoint.format={fmt!r} is not a format{did_you_mean(str(fmt), formats)}; "
            f"use one of {list(formats)}"
        )
    fsdp = strategy_of(train) == "fsdp"
    if fmt == "file" and fsdp:
        raise ConfigError(
            "train.checkpoint.format=file cannot save an FSDP run (no process holds the whole "
            "model); use 'auto' and make a single file afterwards with tools/convert_checkpoint.py"
        )
    return fmt == "sharded" or (fmt == "auto" and fsdp)


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
