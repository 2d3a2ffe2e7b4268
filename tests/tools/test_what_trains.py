"""What a tool shows is what trains: inspect_param_groups.py, plot_lr.py and the training run agree.

For every config in the repo, the groups `tools/inspect_param_groups.py --json` reports equal the
optimizer's groups at the first training iteration of `tools/train_net.py` (names, members, lr,
weight decay), `tools/plot_lr.py`'s first LRs equal the trainer's, and the table the run logs at
its start is the one the inspect tool prints.
"""

import importlib
import json
import logging
import os

import pytest

from pgtrain.config import LazyConfig
from pgtrain.engine import HookBase
from tests._repo_configs import ROOT, as_full_config, repo_configs, tiny_overrides


def load_tool(name):
    """The tool's module (``tools/<name>.py`` runs it; the code is ``pgtrain/tools/<name>.py``)."""
    return importlib.import_module(f"pgtrain.tools.{name}")


def snapshot(groups):
    return [
        {
            "name": g["name"],
            "params": list(g["param_names"]),
            "lr": float(g["lr"]),
            "weight_decay": float(g["weight_decay"]),
        }
        for g in groups
    ]


class FirstGroups(HookBase):
    """Records the optimizer's groups as the first training iteration starts."""

    def __init__(self):
        self.groups = None

    def before_step(self):
        if self.groups is None:
            self.groups = snapshot(self.trainer.optimizer.param_groups)


def train_first_groups(cfg, monkeypatch, caplog):
    """Runs tools/train_net.py's training for one iteration; returns its groups and its table."""
    train_net = load_tool("train_net")
    os.makedirs(cfg.train.output_dir, exist_ok=True)  # default_setup's job in a real run
    capture = FirstGroups()
    default_hooks = train_net.default_hooks
    monkeypatch.setattr(train_net, "default_hooks", lambda *a: [capture, *default_hooks(*a)])
    with caplog.at_level(logging.INFO, logger="pgtrain.train_net"):
        train_net.do_train(cfg, resume=False)
    logged = [r.getMessage() for r in caplog.records if r.name == "pgtrain.train_net"]
    table = next(m for m in logged if m.startswith("Parameter groups:\n"))
    return capture.groups, table.split("\n", 1)[1]


def inspect_report(path, opts, tmp_path, capsys):
    out = tmp_path / "groups.json"
    capsys.readouterr()
    load_tool("inspect_param_groups").main(["--config", path, "--json", str(out), *opts])
    printed = capsys.readouterr().out
    report = json.loads(out.read_text())
    groups = [
        {
            "name": g["name"],
            "params": [p["name"] for p in g["params"]],
            "lr": g["lr"],
            "weight_decay": g["weight_decay"],
        }
        for g in report["groups"]
    ]
    return groups, printed, report


def full_configs():
    """(config path, which full config) per case; a fragment's nodes each go into the toy."""
    cases = []
    for path in repo_configs():
        fulls = as_full_config(LazyConfig.load(os.path.join(ROOT, path)))
        cases += [pytest.param(path, i, id=f"{path}[{i}]") for i in range(len(fulls))]
    return cases


@pytest.mark.slow
@pytest.mark.parametrize("path, fragment", full_configs())
def test_inspect_plot_and_training_agree_on_the_first_iteration(
    path, fragment, tmp_path, monkeypatch, caplog, capsys
):
    cfg = as_full_config(LazyConfig.load(os.path.join(ROOT, path)))[fragment]
    opts = tiny_overrides(cfg, tmp_path)
    if "dataloader" in cfg:
        opts += ["train.max_iter=2", "train.device=cpu", "train.eval_period=0"]
    LazyConfig.apply_overrides(cfg, opts)
    saved = tmp_path / "config.yaml"  # the tools read a file, as a user's command line does
    LazyConfig.save(cfg, str(saved))

    shown, printed, _ = inspect_report(str(saved), [], tmp_path, capsys)
    if "dataloader" not in cfg:  # inspection-only (the STMixer optimizer): nothing trains
        assert shown and all(g["params"] for g in shown)
        return
    curves = load_tool("plot_lr").lr_curves(LazyConfig.load(str(saved)))
    trained, table = train_first_groups(LazyConfig.load(str(saved)), monkeypatch, caplog)

    assert [g["name"] for g in shown] == [g["name"] for g in trained]
    for seen, used in zip(shown, trained, strict=True):
        assert seen["params"] == used["params"], seen["name"]
        assert seen["lr"] == pytest.approx(used["lr"], rel=1e-12), seen["name"]
        assert seen["weight_decay"] == used["weight_decay"], seen["name"]
        assert curves[used["name"]][0] == pytest.approx(used["lr"], rel=1e-12), used["name"]
    assert printed.rstrip("\n") == table


def test_the_main_job_shows_the_fresh_group_that_trains(tmp_path, capsys):
    # Observed: the inspect tool showed one group (`default`, 77 tensors) where training had two.
    shown, printed, report = inspect_report(
        "projects/maskrcnn/config.py", [f"shapes.root={tmp_path}"], tmp_path, capsys
    )
    groups = {g["name"]: g for g in shown}
    assert list(groups) == ["default", "new"]
    assert len(groups["new"]["params"]) == 34 and len(groups["default"]["params"]) == 43
    assert all(n.startswith("backbone.body.") for n in groups["default"]["params"])
    assert groups["new"]["lr"] / groups["default"]["lr"] == pytest.approx(10)
    assert "new" in printed and "lr at iter 1" in printed


def test_the_table_shows_the_lrs_after_batch_size_scaling(tmp_path, capsys):
    # Observed: with train.lr_scaling set, the run-start table showed the LRs before scaling.
    opts = ["train.lr_scaling.reference_batch=16", "train.lr_scaling.rule=linear"]
    shown, printed, report = inspect_report("configs/quick/toy.py", opts, tmp_path, capsys)
    groups = {g["name"]: g for g in report["groups"]}
    # batch 32 against a reference of 16: every LR doubles (toy: 0.005 and 10x for the head)
    # the scaling is the scheduler's factor: the groups keep the config's LRs as initial LRs
    assert groups["default"]["initial_lr"] * groups["default"]["lr_factor"] == pytest.approx(0.01)
    assert groups["head"]["initial_lr"] * groups["head"]["lr_factor"] == pytest.approx(0.1)
    assert groups["head"]["lr_factor"] == 2.0
    assert "note: batch-size LR scaling: lr = initial × (32/16) [linear, reference 16]" in printed
    rows = {line.split()[0]: line.split() for line in printed.splitlines()[3:5]}
    assert rows["default"][3] == "0.01" and rows["head"][3] == "0.1"
    # and the LR of the first iteration is the warmup's start of those
    assert float(rows["head"][4]) == pytest.approx(groups["head"]["lr"], rel=1e-3)
