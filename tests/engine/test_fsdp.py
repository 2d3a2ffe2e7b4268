"""FSDP2 with param groups: two gloo processes train the ViT with layer decay exactly as one process
does (weights, optimizer state, per-group LRs and statistics, the group table), save sharded
checkpoints, and resume a regrouped run from a checkpoint one process saved (1 -> 2); the
two-process checkpoint loads into one process (2 -> 1)."""

import json
import os
import re
import shutil

import pytest
import torch

from pgtrain.checkpoint.sharded import read_sharded
from pgtrain.engine import launch
from tests._loggers import loggers_restored
from tests.engine._fsdp_targets import REGROUPED, fsdp_runs, train, uneven_evaluation, vit_config

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The one-process runs here, the two-process FSDP runs in one launch."""
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        os.environ.pop(var, None)
    root = tmp_path_factory.mktemp("fsdp")
    with loggers_restored():  # train_net's main sets up logging in this process too
        run_all(root)
    return root


def run_all(root):
    single = root / "single"
    # Saved sharded by one process, so the two-process run below resumes from it (1 -> 2).
    train(vit_config(str(single), "train.checkpoint.format=sharded"), resume=False)
    shutil.copytree(single, root / "resumed")
    shutil.copytree(single, root / "resumed_single")
    launch(fsdp_runs, 2, args=(str(root),), backend="gloo")
    train(vit_config(str(root / "resumed_single"), *REGROUPED), resume=True)
    # Two processes' checkpoint resumed by one (2 -> 1), against one process all along.
    shutil.copytree(root / "fsdp", root / "fsdp_then_single")
    shutil.copytree(single, root / "single_longer")
    for name in ("fsdp_then_single", "single_longer"):
        train(vit_config(str(root / name), "train.max_iter=6"), resume=True)


def metrics(folder):
    lines = (folder / "metrics.json").read_text().splitlines()
    return {r["iteration"]: r for r in map(json.loads, lines) if "total_loss" in r}


def group_table(folder, rank=0):
    log = (folder / ("log.txt" if rank == 0 else f"log.txt.rank{rank}")).read_text()
    lines = log.split("Parameter groups:\n", 1)[1].splitlines()
    end = next(i for i, line in enumerate(lines) if re.match(r"^\[\d{4}-", line))  # next record
    return "\n".join(lines[:end])


def assert_same_tensors(a, b, what, atol=1e-5):
    assert sorted(a) == sorted(b), what
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=1e-4, atol=atol, msg=f"{what}: {key}")


def test_two_fsdp_processes_train_as_one_process(runs):
    one = read_sharded(str(runs / "single" / "model_final.dcp"))
    two = read_sharded(str(runs / "fsdp" / "model_final.dcp"))  # 2 -> 1: read whole
    assert_same_tensors(one["model"], two["model"], "weights")
    state_one, state_two = one["trainer"]["optimizer"], two["trainer"]["optimizer"]
    assert state_one["groups"] == state_two["groups"]
    for name, state in state_one["state"].items():
        assert_same_tensors(state, state_two["state"][name], f"optimizer state of {name}")
    # Training moved the weights (the equality is not that of two idle models).
    first = read_sharded(str(runs / "single" / "model_0000002.dcp"))
    assert not torch.allclose(first["model"]["head.weight"], one["model"]["head.weight"])


@pytest.mark.parametrize("then", ["fsdp_then_single", "fsdp_then_ddp"])
def test_a_two_process_fsdp_checkpoint_resumes_in_one_process_and_under_ddp(runs, then):
    one = torch.load(runs / "single_longer" / "model_final.pth", weights_only=True)
    other = torch.load(runs / then / "model_final.pth", weights_only=True)
    assert one["iteration"] == other["iteration"] == 5
    assert_same_tensors(one["model"], other["model"], "weights")
    log = (runs / then / "log.txt").read_text()
    assert f"Loading checkpoint {runs / then / 'model_final.dcp'}" in log  # the sharded one
    assert "Starting training at iteration 5 of 6" in log


def test_fsdp_logs_the_same_groups_lrs_and_statistics(runs):
    one, two = metrics(runs / "single"), metrics(runs / "fsdp")
    assert sorted(one) == sorted(two) == [1, 2, 3, 4]  # iterations done
    stats = ("lr", "grad_norm", "weight_norm", "update_ratio")
    keys = [k for k in one[1] if "/" in k and k.split("/")[0] in stats] + [
        "grad_norm",
        "total_loss",
    ]
    # A group per layer and weight decay, and the head's: 9 groups, 4 statistics each.
    assert len(keys) == 9 * 4 + 2 and "update_ratio/head[wd=0.05]" in keys
    for it in one:
        for key in keys:
            assert two[it][key] == pytest.approx(one[it][key], rel=1e-4), (it, key)
    assert group_table(runs / "fsdp") == group_table(runs / "single")
    assert group_table(runs / "fsdp", rank=1) == group_table(runs / "single")


def test_the_fsdp_checkpoint_is_sharded_and_plain(runs):
    folder = runs / "fsdp" / "model_final.dcp"
    assert sorted(p.name for p in folder.iterdir()) == [
        ".metadata",
        "__0_0.distcp",
        "__1_0.distcp",
        "state.pth",
    ]
    state = torch.load(folder / "state.pth", weights_only=True)
    assert state["iteration"] == 3 and "model" in state
    assert (runs / "fsdp" / "last_checkpoint").read_text() == "model_final.dcp"
    assert not [p for p in (runs / "fsdp").iterdir() if p.name.endswith(".tmp")]


def test_a_one_process_checkpoint_resumes_regrouped_in_two_fsdp_processes(runs):
    # The one-process resume of the same sharded checkpoint writes single files (format auto).
    assert (runs / "resumed_single" / "last_checkpoint").read_text() == "model_final.pth"
    one = torch.load(runs / "resumed_single" / "model_final.pth", weights_only=True)
    two = read_sharded(str(runs / "resumed" / "model_final.dcp"))
    assert one["trainer"]["iteration"] == two["trainer"]["iteration"] == 5
    assert_same_tensors(one["model"], two["model"], "weights after the regrouped resume")
    group = two["trainer"]["optimizer"]["groups"]["backbone.blocks.0.attn.qkv.weight"]
    assert group.startswith("attn[")  # the new grouping
    log = (runs / "resumed" / "log.txt").read_text()
    assert "moved 'layer_1[wd=0.05]' -> 'attn[" in log  # the state followed by name
    lrs_one, lrs_two = metrics(runs / "resumed_single"), metrics(runs / "resumed")
    head = "lr/head[wd=0.05]"
    # the first resumed iteration, the 5th
    assert lrs_two[5][head] == pytest.approx(lrs_one[5][head])
    assert lrs_two[5][head] == pytest.approx(30 * lrs_two[5]["lr/layer_3"])  # 30x now, not 10x


def test_fsdp_accumulation_reduces_gradients_once_per_step(runs):
    counts = json.loads((runs / "syncs.json").read_text())
    assert counts["1"] >= 2 * 3  # each step: the 2 blocks' units and the root's
    assert counts["4"] == counts["1"]  # not 4x: the micro-steps kept their gradients local


def test_the_public_evaluation_of_a_sharded_model_on_uneven_shares_matches_one_process(runs):
    # inference_on_dataset finds the shards itself (no lockstep argument): rank 1's share
    # ends a batch early and runs its last batch again until rank 0 is done.
    uneven_evaluation(str(runs / "one_process_eval.json"))
    two = json.loads((runs / "uneven_eval.json").read_text())
    one = json.loads((runs / "one_process_eval.json").read_text())
    assert two == pytest.approx(one)
