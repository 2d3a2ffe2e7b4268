"""Gradual unfreezing with two processes: under DDP every rank switches at the stage's
iteration (DDP is wrapped anew there) and a resume past or across the boundary equals the
unbroken run bit for bit; under FSDP2 the sharded run trains as one process does."""

import os
import re

import pytest
import torch

from pgtrain.checkpoint.sharded import read_sharded
from pgtrain.engine import launch
from tests._loggers import loggers_restored
from tests.engine._fsdp_targets import train, vit_config
from tests.engine._unfreeze_targets import VIT_STAGES, unfreeze_runs
from tests.engine.test_exact_resume import assert_resume_is_exact
from tests.engine.test_fsdp import assert_same_tensors, metrics

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        os.environ.pop(var, None)
    root = tmp_path_factory.mktemp("unfreeze")
    launch(unfreeze_runs, 2, args=(str(root),), backend="gloo")
    with loggers_restored():
        train(vit_config(str(root / "single"), VIT_STAGES), resume=False)
    return root


def switches(folder, rank):
    log = (folder / ("log.txt" if rank == 0 else f"log.txt.rank{rank}")).read_text()
    return re.findall(r"stage 1 of 1 at iteration (\d+)", log)


@pytest.mark.parametrize("at", [3, 8])
def test_ddp_ranks_switch_together_and_resume_exactly(runs, at):
    assert_resume_is_exact(str(runs / f"ddp_at{at}"))
    unbroken = runs / f"ddp_at{at}" / "unbroken"
    assert switches(unbroken, 0) == switches(unbroken, 1) == [str(at + 1)]
    resumed = runs / f"ddp_at{at}" / "resumed"  # resumed after 5: only the later stage switches
    assert switches(resumed, 0) == switches(resumed, 1) == ([str(at + 1)] if at > 5 else [])


def test_a_compiled_ddp_model_is_wrapped_anew_inside_its_compiled_wrapper(runs):
    assert_resume_is_exact(str(runs / "compiled"))
    assert switches(runs / "compiled" / "resumed", 1) == ["9"]
    log = (runs / "compiled" / "resumed" / "log.txt.rank1").read_text()
    assert "DDP wrapped anew inside torch.compile's wrapper: 2 of 12 parameter tensors" in log
    assert "DDP wrapped anew inside torch.compile's wrapper: 12 of 12 parameter tensors" in log


def test_fsdp_unfreezes_as_one_process_does(runs):
    one = torch.load(runs / "single" / "model_final.pth", weights_only=True)
    two = read_sharded(str(runs / "fsdp" / "model_final.dcp"))
    assert_same_tensors(one["model"], two["model"], "model")
    state_one, state_two = one["trainer"]["optimizer"], two["trainer"]["optimizer"]
    for name, state in state_one["state"].items():
        assert_same_tensors(state, state_two["state"][name], f"optimizer state of {name}")
    # Block 0 (its own FSDP unit, held for 2 iterations) trained after its stage began.
    key = "backbone.blocks.0.mlp.fc1.weight"
    at2 = read_sharded(str(runs / "fsdp" / "model_0000002.dcp"))["model"]
    assert not torch.equal(at2[key], two["model"][key])
    single_at2 = torch.load(runs / "single" / "model_0000002.pth", weights_only=True)["model"]
    assert_same_tensors(single_at2, at2, "model after the hold")
    # No gradient in the held groups before iteration 3, on the shards as in one process.
    rows = metrics(runs / "fsdp")
    assert [rows[i]["grad_norm/layer_1[wd=0.05]"] == 0 for i in (1, 2, 3, 4)] == [
        True,
        True,
        False,
        False,
    ]
    assert all(rows[i]["grad_norm/layer_2[wd=0.05]"] > 0 for i in (1, 2, 3, 4))
    log = (runs / "fsdp" / "log.txt").read_text()
    assert "stage 1 of 1 at iteration 3: groups 'layer_0[wd=0]'" in log
    assert "Audit at iteration 3:" in log
