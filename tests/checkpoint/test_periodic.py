"""PeriodicCheckpointer saves numbered checkpoints every period and a final one at the end."""

import os
from types import SimpleNamespace

import pytest
import torch

from pgtrain.checkpoint import Checkpointer
from pgtrain.engine import PeriodicCheckpointer
from pgtrain.errors import ConfigError


def _run(hook: PeriodicCheckpointer, max_iter: int, start_iter: int = 0, trainer_max_iter=None):
    """Calls after_step like a trainer running iterations start_iter .. max_iter - 1."""
    trainer_max_iter = max_iter if trainer_max_iter is None else trainer_max_iter
    hook.trainer = SimpleNamespace(
        iter=start_iter, start_iter=start_iter, max_iter=trainer_max_iter
    )
    for iteration in range(start_iter, max_iter):
        hook.trainer.iter = iteration
        hook.after_step()


def _iterations(folder) -> dict[str, int]:
    return {
        name: torch.load(os.path.join(folder, name), weights_only=True)["iteration"]
        for name in os.listdir(folder)
        if name.endswith(".pth")
    }


def test_saves_every_period_and_final(tmp_path, make_net):
    hook = PeriodicCheckpointer(Checkpointer(make_net(), str(tmp_path)), period=3)
    _run(hook, max_iter=7)
    assert _iterations(tmp_path) == {
        "model_0000003.pth": 2,  # named by iterations done; `iteration` is the index
        "model_0000006.pth": 5,
        "model_final.pth": 6,
    }
    assert (tmp_path / "last_checkpoint").read_text() == "model_final.pth"


def test_explicit_max_iter_prefix_and_resume_start(tmp_path, make_net):
    checkpointer = Checkpointer(make_net(), str(tmp_path), keep_last=1)
    hook = PeriodicCheckpointer(checkpointer, 2, max_iter=6, file_prefix="net")
    # A resumed run starts at 3; the hook's max_iter wins over the trainer's.
    _run(hook, max_iter=6, start_iter=3, trainer_max_iter=100)
    assert _iterations(tmp_path) == {"net_0000006.pth": 5, "net_final.pth": 5}


def test_non_main_rank_writes_nothing(tmp_path, make_net):
    hook = PeriodicCheckpointer(Checkpointer(make_net(), str(tmp_path), save_to_disk=False), 1)
    _run(hook, max_iter=3)
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("period", [0, -2, 1.5, True])
def test_bad_period(make_net, period):
    with pytest.raises(ConfigError, match="period"):
        PeriodicCheckpointer(Checkpointer(make_net()), period)
