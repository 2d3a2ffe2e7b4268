"""Atomic saves: a crash or a SIGKILL in the middle of a save leaves the previous checkpoint."""

import os
import random
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch
from torch import nn

from pgtrain.checkpoint import Checkpointer
from pgtrain.errors import CheckpointError

CHILD = os.path.join(os.path.dirname(os.path.abspath(__file__)), "save_loop_child.py")
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(CHILD)))


@pytest.mark.parametrize("name", ["model_0000002", "model_0000001"])
def test_failed_write_keeps_previous_checkpoint(tmp_path, make_net, monkeypatch, name):
    model = make_net()
    checkpointer = Checkpointer(model, str(tmp_path))
    good = checkpointer.save("model_0000001", iteration=1)
    expected = model.head.weight.detach().clone()
    with torch.no_grad():
        model.head.weight.add_(1.0)
    original_save = torch.save

    def half_then_fail(obj, f):
        original_save(obj, f)
        f.seek(f.tell() // 2)
        f.truncate()
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", half_then_fail)
    with pytest.raises(CheckpointError, match=f"{name}.pth.*No space left"):
        checkpointer.save(name, iteration=2)
    monkeypatch.undo()
    assert sorted(os.listdir(tmp_path)) == ["last_checkpoint", "model_0000001.pth"]
    assert checkpointer.get_checkpoint_file() == good
    restored = make_net(seed=1)
    assert Checkpointer(restored).load(good).extra == {"iteration": 1}
    assert torch.equal(restored.head.weight, expected)


def test_first_save_removes_stale_temp_files(tmp_path, make_net):
    stale = tmp_path / ".model_0000004.pth.0a1b2c3d.tmp"
    stale.write_bytes(b"half a checkpoint")
    unrelated = tmp_path / "notes.tmp"
    unrelated.write_text("mine")
    Checkpointer(make_net(), str(tmp_path)).save("model_0000004")
    assert not stale.exists() and unrelated.exists()


def _weight_value(path: str) -> tuple[int, float]:
    model = nn.Linear(3600, 3600, bias=False)
    report = Checkpointer(model).load(path)
    assert report.missing == [] and report.shape_mismatched == []
    values = model.weight.detach().unique()
    assert values.numel() == 1, f"{path} mixes values from two saves"
    return report.extra["iteration"], float(values[0])


def test_sigkill_during_save_leaves_last_checkpoint_loadable(tmp_path):
    child = subprocess.Popen(
        [sys.executable, CHILD, str(tmp_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": ROOT},
    )
    try:
        lines = [child.stdout.readline() for _ in range(3)]
        assert lines[1].startswith("saved 0 "), f"child failed: {lines} {child.stderr.read()}"
        assert lines[2].startswith("writing "), lines
        # Kill at a random moment while the second save writes its file.
        time.sleep(random.uniform(0.1, 0.9) * float(lines[2].split()[1]))
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
        rest = child.stdout.read().splitlines()
        reported = [0] + [int(x.split()[1]) for x in rest if x.startswith("saved")]

        pointed = Checkpointer(nn.Linear(1, 1), str(tmp_path)).get_checkpoint_file()
        iteration, value = _weight_value(pointed)
        assert iteration == value
        # Killed after a save finished but before it was printed: one more than reported.
        assert iteration in (reported[-1], reported[-1] + 1)
        for name in os.listdir(tmp_path):
            if name.endswith(".pth"):  # every file under a final name is complete
                _weight_value(str(tmp_path / name))
        # The next run's first save removes the killed save's temporary file.
        Checkpointer(nn.Linear(1, 1), str(tmp_path)).save("model_final")
        assert not [name for name in os.listdir(tmp_path) if name.endswith(".tmp")]
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        shutil.rmtree(tmp_path, ignore_errors=True)  # ~150 MB; do not leave it in /tmp
