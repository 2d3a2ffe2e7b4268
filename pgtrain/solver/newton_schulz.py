"""Muon's orthogonalization (a quintic Newton-Schulz iteration) in a chosen dtype, and the choice
of the fastest dtype the device really has.

torch's Muon always iterates in bfloat16, which is fast on GPUs and on CPUs with bf16 matrix
units, and about 50x slower than float32 on CPUs without them (AVX2 machines). `fastest_dtype`
times one matrix product in each candidate dtype on the device once per process and logs what
it chose.
"""

import logging
import time

import torch
from torch import Tensor

from pgtrain.errors import ConfigError

__all__ = ["NS_DTYPES", "fastest_dtype", "orthogonalize", "resolve_ns_dtype"]

logger = logging.getLogger(__name__)

NS_DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32, "fp16": torch.float16}
_CHOSEN: dict[str, str] = {}  # device type -> the dtype name chosen for it (this process)


def orthogonalize(
    matrix: Tensor,
    coefficients: tuple[float, float, float],
    steps: int,
    eps: float,
    dtype: torch.dtype,
) -> Tensor:
    """`matrix` (2-D) mapped towards the nearest semi-orthogonal matrix by `steps` quintic
    Newton-Schulz iterations ``X <- a X + (b A + c A^2) X`` with ``A = X X^T``, computed in
    `dtype` on the wide orientation after scaling to a Frobenius norm of at most 1."""
    a, b, c = coefficients
    tall = matrix.size(0) > matrix.size(1)
    x = matrix.to(dtype)
    x = x.T if tall else x
    x = x / x.norm().clamp(min=eps)
    for _ in range(steps):
        gram = x @ x.T
        poly = torch.addmm(gram, gram, gram, beta=b, alpha=c)
        x = torch.addmm(x, poly, x, beta=a)
    return x.T if tall else x


def resolve_ns_dtype(name: str, device: torch.device) -> torch.dtype:
    """The dtype ``ns_dtype`` names; ``"auto"``: `fastest_dtype` on `device`.

    Raises:
        ConfigError: an unknown name.
    """
    if name == "auto":
        name = fastest_dtype(device)
    if name not in NS_DTYPES:
        raise ConfigError(
            f"ns_dtype={name!r} is not a dtype; use 'auto' or one of {list(NS_DTYPES)}"
        )
    return NS_DTYPES[name]


def fastest_dtype(device: torch.device) -> str:
    """``"bf16"`` where the device multiplies bf16 matrices at least as fast as fp32 ones (GPUs
    with bf16 support, CPUs with bf16 matrix units), else ``"fp32"``; measured once per device
    type and process, and logged."""
    kind = torch.device(device).type
    if kind in _CHOSEN:
        return _CHOSEN[kind]
    if kind == "cuda":
        chosen = "bf16" if torch.cuda.is_bf16_supported() else "fp32"
        logger.info("Muon's Newton-Schulz runs in %s on CUDA", chosen)
    else:
        times = {name: _matmul_time(NS_DTYPES[name], device) for name in ("bf16", "fp32")}
        chosen = "bf16" if times["bf16"] <= times["fp32"] else "fp32"
        logger.info(
            "Muon's Newton-Schulz runs in %s on %s (a 256 x 768 matrix product: bf16 %.3g ms, "
            "fp32 %.3g ms; train with optimizer.ns_dtype to choose)",
            *(chosen, kind, times["bf16"] * 1e3, times["fp32"] * 1e3),
        )
    _CHOSEN[kind] = chosen
    return chosen


def _matmul_time(dtype: torch.dtype, device: torch.device) -> float:
    """The fastest of 5 timed products ``X X^T`` of a 256 x 768 matrix (after 2 untimed)."""
    x = torch.randn(256, 768, device=device).to(dtype)
    best = float("inf")
    for i in range(7):
        start = time.perf_counter()
        (x @ x.T).sum().item()  # .item(): wait for the device
        if i >= 2:
            best = min(best, time.perf_counter() - start)
    return best
