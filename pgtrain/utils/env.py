"""Random seeding: one call seeds Python's `random`, NumPy and torch; per-rank seeds for DDP.

Per-rank seeding: every rank seeds its generators with ``per_rank_seed(seed, rank)``, i.e.
``seed + rank``. Ranks then draw different random augmentations and dropout masks (identical
draws on every rank would waste data parallelism), while a run with the same seed and world size
repeats exactly. The model's initial weights need no shared seed: DDP copies rank 0's
parameters to every rank when it wraps the model. Collective choices that must agree across
ranks (e.g. the shuffling order of a distributed sampler) use
`pgtrain.utils.comm.shared_random_seed` instead. DataLoader workers need nothing extra: torch
seeds each worker's `random`, NumPy and torch from the process's torch generator.
"""

import logging
import numbers
import os
import random
import time

import torch

from pgtrain.errors import ConfigError

__all__ = ["seed_all_rng", "per_rank_seed"]

logger = logging.getLogger(__name__)

# NumPy accepts seeds in [0, 2**32); keeping every seed in that range makes one seed valid for all
# three generators.
_SEED_LIMIT = 2**32


def _generate_seed() -> int:
    # os.urandom alone would do; mixing in the time and pid keeps seeds distinct even where
    # urandom is weak (e.g. early boot in containers).
    entropy = int.from_bytes(os.urandom(4), "big") ^ time.time_ns() ^ (os.getpid() << 16)
    return entropy % 2**31


def seed_all_rng(seed: int | None = None) -> int:
    """Seeds Python's `random`, NumPy (if installed) and torch (CPU and CUDA) with one seed.

    Args:
        seed: an integer in [0, 2**32); None picks one from os.urandom and the time and logs it,
            so a run that turns out interesting can be repeated with that seed.

    Returns:
        The seed used.

    Raises:
        ConfigError: the seed is not an integer in [0, 2**32).
    """
    if seed is None:
        seed = _generate_seed()
        logger.info("Using a generated random seed %d", seed)
    elif isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise ConfigError(f"seed must be an integer or None (pick one at random), got {seed!r}")
    elif not 0 <= seed < _SEED_LIMIT:
        raise ConfigError(f"seed must be an integer in [0, 2**32), got {seed}")
    seed = int(seed)  # e.g. a numpy integer
    random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device
    try:
        import numpy as np
    except ImportError:  # numpy is optional for torch; nothing to seed then
        return seed
    np.random.seed(seed)
    return seed


def per_rank_seed(seed: int, rank: int) -> int:
    """Returns the seed for `rank` derived from a run's `seed`: ``seed + rank`` (mod 2**32).

    Args:
        seed: the run's seed, in [0, 2**32).
        rank: the process's global rank (`pgtrain.utils.comm.get_rank()`).

    Returns:
        A seed in [0, 2**32) that differs between the ranks of one run.
    """
    if rank < 0:
        raise ValueError(f"rank must be >= 0, got {rank}")
    return (seed + rank) % _SEED_LIMIT
