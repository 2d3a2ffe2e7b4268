"""Checkpoint errors: missing, corrupt and unsafe files, NaN weights, non-plain state."""

import os
import re

import numpy as np
import pytest
import torch

from pgtrain.checkpoint import Checkpointer
from pgtrain.errors import CheckpointError, ConfigError

UNSAFE = (
    "refused: it contains objects other than tensors and plain values, which could run code "
    "when loaded"
)


class _Payload:
    """Unpickling this runs ``os.mkdir(marker)``: the shape of a malicious checkpoint."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def test_unsafe_pickle_is_refused_and_does_not_run(tmp_path, make_net):
    marker = str(tmp_path / "code_ran")
    path = str(tmp_path / "evil.pth")
    torch.save({"model": make_net().state_dict(), "payload": _Payload(marker)}, path)

    with pytest.raises(CheckpointError, match=re.escape(UNSAFE)) as error:
        Checkpointer(make_net()).load(path)
    assert path in str(error.value) and "posix.mkdir" in str(error.value)
    assert not os.path.exists(marker)
    # The payload is live: an unsafe load would have run it.
    torch.load(path, weights_only=False)
    assert os.path.isdir(marker)


def test_missing_file(tmp_path, make_net):
    path = str(tmp_path / "nope.pth")
    with pytest.raises(CheckpointError, match=r"nope\.pth does not exist"):
        Checkpointer(make_net()).load(path)


def test_pointer_to_deleted_file(tmp_path, make_net):
    checkpointer = Checkpointer(make_net(), str(tmp_path))
    path = checkpointer.save("model_0000000")
    os.remove(path)
    with pytest.raises(CheckpointError, match="model_0000000.pth does not exist"):
        checkpointer.resume_or_load("", resume=True)


@pytest.mark.parametrize("damage", ["truncated", "empty", "text", "flipped"])
def test_corrupt_file(tmp_path, make_net, damage):
    good = Checkpointer(make_net(), str(tmp_path)).save("model_0000000")
    data = open(good, "rb").read()
    content = {
        "truncated": data[: len(data) // 2],
        "empty": b"",
        "text": b"not a checkpoint\n",
        "flipped": data[:64] + bytes(b ^ 0xFF for b in data[64:1024]) + data[1024:],
    }[damage]
    path = str(tmp_path / f"{damage}.pth")
    with open(path, "wb") as f:
        f.write(content)
    with pytest.raises(CheckpointError, match="is not a readable checkpoint") as error:
        Checkpointer(make_net()).load(path)
    assert path in str(error.value)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (torch.zeros(3), "holds a Tensor"),
        ({"weights": {"a": torch.zeros(1)}, "epoch": 3}, "no 'model' entry"),
    ],
)
def test_file_that_is_not_a_checkpoint(tmp_path, make_net, content, message):
    path = str(tmp_path / "other.pth")
    torch.save(content, path)
    with pytest.raises(CheckpointError, match=message):
        Checkpointer(make_net()).load(path)


def test_nan_weights_are_never_saved(tmp_path, make_net):
    model = make_net()
    checkpointer = Checkpointer(model, str(tmp_path))
    good = checkpointer.save("model_0000001", iteration=1)
    expected = model.head.weight.detach().clone()
    with torch.no_grad():
        model.head.weight[0, 0] = float("nan")

    with pytest.raises(CheckpointError, match="'head.weight' has NaN/Inf"):
        checkpointer.save("model_0000002", iteration=2)
    assert sorted(os.listdir(tmp_path)) == ["last_checkpoint", "model_0000001.pth"]
    assert checkpointer.get_checkpoint_file() == good
    assert torch.equal(torch.load(good, weights_only=True)["model"]["head.weight"], expected)


class _Holder:
    def __init__(self, value) -> None:
        self.value = value

    def state_dict(self) -> dict:
        return {"stats": {"best": self.value}}

    def load_state_dict(self, state: dict) -> None:
        self.value = state["stats"]["best"]


def test_state_that_would_not_load_safely_is_not_saved(tmp_path, make_net):
    checkpointer = Checkpointer(make_net(), str(tmp_path), holder=_Holder(np.float64(0.5)))
    with pytest.raises(CheckpointError, match=r"'holder\.stats\.best' is a numpy\.float64"):
        checkpointer.save("model_0000000")
    assert os.listdir(tmp_path) == []


def test_extra_key_clash_and_bad_arguments(tmp_path, make_net):
    checkpointer = Checkpointer(make_net(), str(tmp_path), holder=_Holder(1.0))
    with pytest.raises(CheckpointError, match="holder"):
        checkpointer.save("model_0000000", holder=3)
    with pytest.raises(CheckpointError, match="plain file name"):
        checkpointer.save("sub/model_0000000")
    with pytest.raises(ConfigError, match="keep_last=0"):
        Checkpointer(make_net(), str(tmp_path), keep_last=0)
    with pytest.raises(ConfigError, match="'thing'.*state_dict"):
        Checkpointer(make_net(), thing=object())


def test_unknown_or_misfit_checkpointable(tmp_path, make_net):
    model = make_net()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    path = Checkpointer(model, str(tmp_path), optimizer=optimizer).save("model_0000000")

    other = make_net()
    one_param = torch.optim.SGD([other.head.weight], lr=0.1)
    checkpointer = Checkpointer(other, optimizer=one_param)
    with pytest.raises(CheckpointError, match="did you mean 'optimizer'"):
        checkpointer.load(path, ["optimiser"])
    with pytest.raises(CheckpointError, match="Could not restore 'optimizer'"):
        checkpointer.load(path)
