"""comm helpers in a single process (no process group) and seeding (pgtrain.utils.env).

The 2-process behaviour of the same helpers is tested through `launch` in
tests/engine/test_launch.py.
"""

import logging
import random

import numpy as np
import pytest
import torch
import torch.distributed as dist

from pgtrain.errors import ConfigError
from pgtrain.utils import comm
from pgtrain.utils.env import per_rank_seed, seed_all_rng


@pytest.fixture(autouse=True)
def _single_process():
    assert not dist.is_initialized(), "these tests need a process without a process group"


def test_ranks_and_sizes_without_process_group(monkeypatch):
    # torchrun's variables alone do not make a process distributed: the group does.
    monkeypatch.setenv("LOCAL_RANK", "3")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    assert comm.get_world_size() == 1
    assert comm.get_rank() == 0
    assert comm.get_local_rank() == 0
    assert comm.get_local_size() == 1
    assert comm.is_main_process()
    assert comm.get_local_process_group() is None


def test_collectives_are_single_process_no_ops():
    obj = {"x": [1, 2]}
    assert comm.synchronize() is None
    gathered = comm.all_gather(obj)
    assert gathered == [obj] and gathered[0] is obj
    assert comm.gather(obj, dst=0) == [obj]


def test_reduce_dict_returns_detached_values():
    loss = torch.tensor(2.5, requires_grad=True) * 2
    reduced = comm.reduce_dict({"loss": loss, "acc": torch.tensor([0.5, 1.0])})
    assert reduced["loss"].item() == 5.0 and not reduced["loss"].requires_grad
    assert reduced["acc"].tolist() == [0.5, 1.0]
    assert comm.reduce_dict({}) == {}


def test_shared_random_seed_follows_python_seed():
    random.seed(7)
    first = comm.shared_random_seed()
    random.seed(7)
    assert comm.shared_random_seed() == first
    assert 0 <= first < 2**31


def _draw() -> tuple[float, float, float]:
    return random.random(), float(np.random.rand()), float(torch.rand(()))


def test_seed_all_rng_seeds_python_numpy_and_torch():
    assert seed_all_rng(123) == 123
    first = _draw()
    seed_all_rng(123)
    assert _draw() == first
    seed_all_rng(124)
    assert all(a != b for a, b in zip(_draw(), first, strict=True))


def test_seed_all_rng_without_seed_logs_the_seed_it_picked(caplog):
    with caplog.at_level(logging.INFO, logger="pgtrain.utils.env"):
        seed = seed_all_rng(None)
    assert 0 <= seed < 2**31
    assert f"Using a generated random seed {seed}" in caplog.text
    first = _draw()
    seed_all_rng(seed)  # the logged seed repeats the run
    assert _draw() == first


@pytest.mark.parametrize("seed", [-1, 2**32, 1.5, "3", True])
def test_seed_all_rng_rejects_invalid_seeds(seed):
    with pytest.raises(ConfigError, match="seed must be an integer"):
        seed_all_rng(seed)


def test_seed_all_rng_accepts_numpy_integers():
    seed = seed_all_rng(np.int64(5))
    assert seed == 5 and type(seed) is int


def test_per_rank_seed_is_seed_plus_rank():
    assert [per_rank_seed(10, rank) for rank in range(3)] == [10, 11, 12]
    assert per_rank_seed(2**32 - 1, 1) == 0  # stays valid for numpy
    with pytest.raises(ValueError, match="rank must be >= 0"):
        per_rank_seed(10, -1)
