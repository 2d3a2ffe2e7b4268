"""train.compile: the optimizer step compiles once for all groups and does not recompile while the
schedule changes every group's LR (counted with torch's own counters); a compiled model trains
and checkpoints under its own parameter names. The "eager" backend keeps the test fast: Dynamo's
guards, which decide recompiles, are the same for every backend."""

import json
import logging

import pytest
import torch
from torch._dynamo.utils import counters

from pgtrain.solver import MuonAdamW
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


def _stepped(make_optimizer, compiled, steps=8):
    """Weights after `steps` steps with an LR that changes before each (fixed gradients), and
    the count of compiled graphs after each step."""
    from pgtrain.engine.strategy.compile import compile_optimizer_step
    from pgtrain.param_groups import build_param_groups

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.ReLU(), torch.nn.Linear(8, 8))
    grads = [torch.randn_like(p) for p in model.parameters()]
    groups = build_param_groups(
        model,
        builder="muon",
        lr=0.01,
        weight_decay=0.1,
        output_layers=["2"],
        rules=[dict(match="0.weight", optimizer="muon")],  # the stem, on AdamW by default
    )
    optimizer = make_optimizer(groups)
    if compiled:
        torch._dynamo.reset()
        counters.clear()
        compile_optimizer_step(optimizer, backend="eager")
    graphs = []
    for step in range(steps):
        for p, g in zip(model.parameters(), grads, strict=True):
            p.grad = g.clone()
        for group in optimizer.param_groups:  # what the scheduler does: in place if a tensor
            lr = 0.01 * (step + 1) / steps
            if isinstance(group["lr"], torch.Tensor):
                group["lr"].fill_(lr)
            else:
                group["lr"] = lr
        optimizer.step()
        graphs.append(counters["stats"]["unique_graphs"])
    assert all(isinstance(g["lr"], torch.Tensor) == compiled for g in optimizer.param_groups)
    return [p.detach().clone() for p in model.parameters()], graphs


@pytest.mark.parametrize(
    "name, make, atol",
    [
        # Adam's foreach kernels refuse a tensor LR: compiled, the step runs per tensor.
        ("AdamW foreach", lambda g: torch.optim.AdamW(g, foreach=True), 1e-6),
        # Muon's update is bfloat16 (Newton-Schulz); times a 0-d float32 LR it stays bfloat16
        # (torch's type promotion), where a float LR scales it in float32: 2e-5 apart after 8
        # steps of 0.006. A wrong or frozen LR would be 1e-2 apart.
        ("Muon + AdamW", lambda g: MuonAdamW(g), 1e-4),
    ],
)
def test_a_compiled_step_matches_the_eager_one_without_recompiling(name, make, atol):
    eager, _ = _stepped(make, compiled=False)
    with torch._dynamo.config.patch(specialize_float=True):
        compiled, graphs = _stepped(make, compiled=True)
    # The first steps compile (until the state exists); the LR changes after that add none.
    assert graphs[0] >= 1 and graphs[-1] == graphs[2], (name, graphs)
    for a, b in zip(eager, compiled, strict=True):
        torch.testing.assert_close(b, a, rtol=0, atol=atol, msg=name)
