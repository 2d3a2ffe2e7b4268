"""train.compile: the optimizer step compiles once for all groups and does not recompile while the
schedule changes every group's LR (counted with torch's own counters); a compiled model trains
and checkpoints under its own parameter names. The "eager" backend keeps the test fast: Dynamo's
guards, which decide recompiles, are the same for every backend."""

import json
import logging

import torch
from torch._dynamo.utils import counters

from tests._repo_configs import toy_run


def graphs_after(tmp_path, iters, *extra):
    from tools import train_net

    torch._dynamo.reset()
    counters.clear()
    folder = tmp_path / str(iters)
    folder.mkdir()
    cfg = toy_run(
        folder,
        "train.compile.optimizer=True",
        "train.compile.backend=eager",
        f"train.max_iter={iters}",
        "lr_scheduler.schedule.warmup_length=10",  # the LR changes at every step
        "train.log_period=1",
        *extra,
    )
    train_net.do_train(cfg, resume=False)
    return counters["stats"]["unique_graphs"], folder


def test_the_compiled_step_does_not_recompile_as_the_lr_changes(tmp_path, caplog):
    # Floats as constants of the graph (Dynamo's specialize_float): a float LR would then
    # recompile the step for every new value (8 graphs here instead of 3), a tensor LR never.
    with torch._dynamo.config.patch(specialize_float=True):
        warm, _ = graphs_after(tmp_path, 3)  # the first steps compile (then the state exists)
        with caplog.at_level(logging.INFO, logger="pgtrain"):
            later, folder = graphs_after(tmp_path, 25)
    # 24 more steps, an LR change before each: no new graph (with float LRs the second step
    # recompiles, since the first compile took the LRs as constants).
    assert warm >= 1 and later == warm
    assert "Compiled the optimizer step (2 groups)" in caplog.text
    rows = [json.loads(line) for line in (folder / "metrics.json").read_text().splitlines()]
    lrs = [r["lr/head"] for r in rows if "lr/head" in r]
    assert len(set(lrs[:10])) == 10  # the warmup did change it, step by step
    ratios = [r["lr/head"] / r["lr/default"] for r in rows if "lr/head" in r]
    assert all(abs(ratio - 10) < 1e-5 for ratio in ratios)  # float32 tensors keep the 10x
    saved = torch.load(folder / "model_final.pth", weights_only=True)
    assert saved["iteration"] == 24


def test_a_compiled_model_trains_and_saves_under_its_own_names(tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="pgtrain"):
        _, folder = graphs_after(tmp_path, 3, "train.compile.model=True")
    assert "Compiled the model's forward" in caplog.text
    saved = torch.load(folder / "model_final.pth", weights_only=True)
    assert "head.weight" in saved["model"] and not any("_orig_mod" in k for k in saved["model"])
    assert "head.weight" in saved["trainer"]["optimizer"]["state"]
