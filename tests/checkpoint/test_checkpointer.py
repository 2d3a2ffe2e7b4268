"""Checkpointer save/load round trips, RNG resume, keep_last, the pointer and iopath URIs."""

import os
import random
import shutil

import numpy as np
import torch
from iopath.common.file_io import PathHandler, PathManager
from torch import nn

from pgtrain.checkpoint import Checkpointer


def _sgd(model: nn.Module) -> torch.optim.SGD:
    return torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)


def _train_step(model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
    # The batch comes from the global torch RNG, so a resume is exact only if RNG is restored.
    x, y = torch.randn(6, 4), torch.randint(0, 3, (6,))
    optimizer.zero_grad()
    nn.functional.cross_entropy(model(x), y).backward()
    optimizer.step()


def _assert_same_state(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_round_trip_is_bit_exact(tmp_path, make_net):
    model = make_net(seed=0)
    optimizer = _sgd(model)
    for _ in range(2):
        _train_step(model, optimizer)
    path = Checkpointer(model, str(tmp_path), optimizer=optimizer).save(
        "model_0000001", iteration=1
    )
    assert path == os.path.join(str(tmp_path), "model_0000001.pth")

    other = make_net(seed=1)
    other_optimizer = _sgd(other)
    checkpointer = Checkpointer(other, str(tmp_path), optimizer=other_optimizer)
    report = checkpointer.resume_or_load("", resume=True)

    _assert_same_state(model.state_dict(), other.state_dict())
    saved, restored = optimizer.state_dict(), other_optimizer.state_dict()
    assert saved["param_groups"] == restored["param_groups"]
    for index, state in saved["state"].items():
        assert torch.equal(state["momentum_buffer"], restored["state"][index]["momentum_buffer"])
    assert report.path == path
    assert report.extra == {"iteration": 1}
    assert report.checkpointables == ["optimizer"]
    assert report.rng_restored
    assert report.missing == report.unexpected == report.fresh == []
    assert report.shape_mismatched == []
    assert len(report.loaded) == len(model.state_dict())


def test_resume_matches_unbroken_run(tmp_path, make_net):
    torch.manual_seed(123)
    unbroken = make_net(seed=0)
    unbroken_optimizer = _sgd(unbroken)
    for step in range(4):
        _train_step(unbroken, unbroken_optimizer)
        if step == 1:
            Checkpointer(unbroken, str(tmp_path), optimizer=unbroken_optimizer).save(
                "model_0000001", iteration=1
            )

    torch.manual_seed(999)  # a new process starts with other random streams
    resumed = make_net(seed=5)
    resumed_optimizer = _sgd(resumed)
    report = Checkpointer(resumed, str(tmp_path), optimizer=resumed_optimizer).resume_or_load(
        "", resume=True
    )
    for _ in range(report.extra["iteration"] + 1, 4):
        _train_step(resumed, resumed_optimizer)
    _assert_same_state(unbroken.state_dict(), resumed.state_dict())


def test_rng_states_restored_on_resume_only(tmp_path, make_net):
    model = make_net()
    Checkpointer(model, str(tmp_path)).save("model_0000000", iteration=0)
    expected = (random.random(), np.random.rand(), torch.rand(3))

    random.seed(7)
    np.random.seed(7)
    torch.manual_seed(7)
    Checkpointer(model, str(tmp_path)).resume_or_load("", resume=True)
    drawn = (random.random(), np.random.rand(), torch.rand(3))
    assert drawn[:2] == expected[:2]
    assert torch.equal(drawn[2], expected[2])

    torch.manual_seed(7)
    weights_only = Checkpointer(model).load(os.path.join(str(tmp_path), "model_0000000.pth"), [])
    assert not weights_only.rng_restored
    assert not torch.equal(torch.rand(3), expected[2])


def test_file_loads_with_weights_only(tmp_path, make_net):
    model = make_net()
    optimizer = _sgd(model)
    _train_step(model, optimizer)
    path = Checkpointer(model, str(tmp_path), optimizer=optimizer).save(
        "model_0000000", iteration=0
    )
    data = torch.load(path, weights_only=True)
    assert set(data) == {"model", "optimizer", "rng", "fresh", "iteration"}
    assert set(data["rng"]) >= {"python", "numpy", "torch"}
    assert data["iteration"] == 0
    _assert_same_state(data["model"], model.state_dict())


def test_keep_last_and_pointer(tmp_path, make_net):
    checkpointer = Checkpointer(make_net(), str(tmp_path), keep_last=2)
    assert not checkpointer.has_checkpoint()
    assert checkpointer.get_checkpoint_file() == ""
    for iteration in (4, 9, 10, 14):
        checkpointer.save(f"model_{iteration:07d}", iteration=iteration)
        expected = os.path.join(str(tmp_path), f"model_{iteration:07d}.pth")
        assert checkpointer.get_checkpoint_file() == expected
    checkpointer.save("model_final", iteration=15)

    assert checkpointer.has_checkpoint()
    assert (tmp_path / "last_checkpoint").read_text() == "model_final.pth"
    assert sorted(os.listdir(tmp_path)) == [
        "last_checkpoint",
        "model_0000010.pth",
        "model_0000014.pth",
        "model_final.pth",
    ]
    # The file just written survives even when older by name than what is kept.
    checkpointer.save("model_0000002", iteration=2)
    assert sorted(p.name for p in tmp_path.glob("model_0*")) == [
        "model_0000002.pth",
        "model_0000014.pth",
    ]


def test_save_disabled_writes_nothing(tmp_path, make_net):
    model = make_net()
    assert Checkpointer(model, str(tmp_path), save_to_disk=False).save("model_0000000") is None
    assert Checkpointer(model, "").save("model_0000000") is None
    assert os.listdir(tmp_path) == []


def test_data_parallel_is_unwrapped(tmp_path, make_net):
    model = make_net()
    checkpointer = Checkpointer(nn.DataParallel(model), str(tmp_path))
    assert checkpointer.model is model
    data = torch.load(checkpointer.save("model_0000000"), weights_only=True)
    assert set(data["model"]) == set(model.state_dict())


class _MirrorHandler(PathHandler):
    """A fake remote store ``mirror://`` backed by a local folder; records uploads."""

    PREFIX = "mirror://"

    def __init__(self, root: str) -> None:
        super().__init__()
        self.root = root
        self.uploads: list[str] = []

    def _local(self, path: str) -> str:
        return os.path.join(self.root, path[len(self.PREFIX) :])

    def _get_supported_prefixes(self) -> list[str]:
        return [self.PREFIX]

    def _get_local_path(self, path: str, **kwargs) -> str:
        return self._local(path)

    def _open(self, path: str, mode: str = "r", **kwargs):
        return open(self._local(path), mode)

    def _copy_from_local(self, local_path: str, dst_path: str, overwrite=False, **kwargs) -> None:
        self.uploads.append(dst_path)
        shutil.copyfile(local_path, self._local(dst_path))

    def _exists(self, path: str, **kwargs) -> bool:
        return os.path.exists(self._local(path))

    def _ls(self, path: str, **kwargs) -> list[str]:
        return os.listdir(self._local(path))

    def _rm(self, path: str, **kwargs) -> None:
        os.remove(self._local(path))

    def _mkdirs(self, path: str, **kwargs) -> None:
        os.makedirs(self._local(path), exist_ok=True)


def test_non_local_save_dir_goes_through_path_manager(tmp_path, make_net):
    handler = _MirrorHandler(str(tmp_path))
    manager = PathManager()
    manager.register_handler(handler)

    model = make_net(seed=0)
    checkpointer = Checkpointer(model, "mirror://run", keep_last=1)
    checkpointer.path_manager = manager
    for iteration in range(2):
        checkpointer.save(f"model_{iteration:07d}", iteration=iteration)
    assert "mirror://run/model_0000001.pth" in handler.uploads
    assert sorted(os.listdir(tmp_path / "run")) == ["last_checkpoint", "model_0000001.pth"]

    other = make_net(seed=1)
    resumer = Checkpointer(other, "mirror://run")
    resumer.path_manager = manager
    report = resumer.resume_or_load("", resume=True)
    assert report.path == "mirror://run/model_0000001.pth"
    assert report.extra == {"iteration": 1}
    _assert_same_state(model.state_dict(), other.state_dict())
