"""Where a run's model goes and in which precision: ``train.device`` and the dtype names."""

import re

import torch

from pgtrain.errors import PgtrainError
from pgtrain.utils import comm

__all__ = ["DEVICE_CHOICES", "PRECISION_DTYPES", "device_check", "resolve_device"]

# The precision names of configs (train.amp.precision, train.fsdp.param_dtype) and their dtypes.
PRECISION_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}

_DEVICE = re.compile(r"^(auto|(cpu|cuda)(:(0|[1-9]\d*))?)$")


DEVICE_CHOICES = "one of 'auto', 'cpu', 'cuda' or 'cuda:N'"


def device_check(value: str) -> str | None:
    """The check of a device setting (``train.device``, ``train.ema.device``)."""
    return None if _DEVICE.match(value) else DEVICE_CHOICES


def resolve_device(device: str) -> torch.device:
    """Turns ``train.device`` ("auto", "cpu", "cuda") into this process's device."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise PgtrainError(f"train.device={device} but CUDA is not available; use train.device=cpu")
    if device == "cuda":
        return torch.device("cuda", comm.get_local_rank())
    if device.startswith("cuda:") and comm.get_world_size() > 1:
        raise PgtrainError(
            f"train.device={device} would put all {comm.get_world_size()} processes on one GPU; "
            "use train.device=cuda (each process takes the GPU of its local rank)"
        )
    return torch.device(device)
