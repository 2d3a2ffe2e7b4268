"""Wrap a model in DistributedDataParallel when the run has more than one process."""

import logging
from dataclasses import dataclass
from typing import Any

from torch import nn
from torch.distributed.algorithms.ddp_comm_hooks import default_hooks
from torch.nn.parallel import DistributedDataParallel

from pgtrain.config.schema import setting
from pgtrain.utils import comm

__all__ = ["DDPSettings", "create_ddp_model"]

logger = logging.getLogger(__name__)


@dataclass
class DDPSettings:
    """``train.ddp``: DistributedDataParallel's options (under ``train.strategy=ddp``)."""

    find_unused_parameters: bool = setting(
        False, "let DDP handle parameters that get no gradient (slower; an unused branch)"
    )
    fp16_compression: bool = setting(False, "all-reduce gradients in float16 (CUDA only)")
    forward_sync_buffers: bool = setting(
        False,
        "sync buffers (BatchNorm statistics) from rank 0 before every forward, not only "
        "when wrapping",
    )
    bucket_cap_mb: float | None = setting(
        None, "gradient bucket size in MiB", gt=0, null="use DDP's default (25)"
    )
    gradient_as_bucket_view: bool = setting(False, "gradients as views into DDP's buckets")
    static_graph: bool = setting(False, "the model uses the same parameters every iteration")


def create_ddp_model(
    model: nn.Module, *, fp16_compression: bool = False, **kwargs: Any
) -> nn.Module:
    """Returns `model` wrapped in DistributedDataParallel, or unchanged in a single process.

    Call it after moving the model to its device. A CUDA model gets ``device_ids`` from the device
    of its parameters (the local rank's GPU under `launch`); a CPU model gets none. Buffers (e.g.
    BatchNorm statistics) are synced once when wrapping but not before every forward, unless
    ``forward_sync_buffers=True`` is passed.

    Args:
        model: the model, already on its device.
        fp16_compression: all-reduce gradients in float16 to halve the traffic between GPUs
            (CUDA only; ignored with a warning on CPU).
        **kwargs: more DistributedDataParallel arguments, e.g. ``find_unused_parameters=True``.

    Returns:
        The DDP-wrapped model (reach the original as ``.module``) or `model` itself.
    """
    if comm.get_world_size() == 1:
        return model
    param = next(model.parameters(), None)  # DDP itself explains why a model without any fails
    on_cuda = param is not None and param.device.type == "cuda"
    if on_cuda:
        kwargs.setdefault("device_ids", [param.device.index])
    if "broadcast_buffers" not in kwargs:  # the older name of the option, deprecated in torch 2.13
        kwargs.setdefault("forward_sync_buffers", False)
    ddp = DistributedDataParallel(model, **kwargs)
    if fp16_compression:
        if on_cuda:
            ddp.register_comm_hook(state=None, hook=default_hooks.fp16_compress_hook)
        else:
            logger.warning(
                "fp16_compression only applies to CUDA models; the CPU model is not compressed"
            )
    return ddp
