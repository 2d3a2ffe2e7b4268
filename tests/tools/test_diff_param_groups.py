"""tools/diff_param_groups.py: two groupings compared before anything trains, by parameter and
by group, with the rules behind each difference; a checkpoint against a config previews a
--resume; exit 0 when equal, 1 when they differ."""

import json
import os
import subprocess
import sys

import pytest

from pgtrain.errors import ConfigError
from tests._loggers import loggers_restored
from tests._repo_configs import ROOT, toy_run
from tools import diff_param_groups

TOY = "configs/quick/toy.py"
NEW_HEAD = "\"optimizer.params.rules=[{'match': 'head.*', 'lr_mult': 20.0, 'group': 'new'}]\""


def diff(capsys, *argv):
    with loggers_restored():
        status = diff_param_groups.main(list(argv))
    return status, capsys.readouterr().out.splitlines()


def test_the_same_config_is_equal_and_exits_0(capsys):
    status, lines = diff(capsys, TOY, f"{TOY} train.max_iter=50")
    assert status == 0
    assert lines[-1] == "equal: the same 12 parameters, groups and values"


def test_a_regrouped_head_is_one_line_per_kind_with_its_rule(capsys):
    status, lines = diff(capsys, TOY, f"{TOY} {NEW_HEAD}")
    assert status == 1
    assert (
        "differ: 2 parameters moved from 'head' to 'new' (set by rules[0]): head.weight, head.bias"
        in lines
    )
    assert (
        "differ: 'head' -> 'new', 2 parameters: lr 0.05 -> 0.1 (set by rules[0]): head.weight, "
        "head.bias" in lines
    )
    assert not any("default" in line for line in lines[2:])  # the rest did not change


def test_base_lr_frozen_and_weight_decay_differences(capsys):
    frozen = "\"optimizer.params.rules=[{'match': 'stem.*', 'frozen': True}]\""
    status, lines = diff(capsys, TOY, f"{TOY} optimizer.lr=0.01 {frozen} optimizer.weight_decay=0")
    assert status == 1
    assert "differ: base lr 0.005 -> 0.01" in lines
    assert any(
        line.startswith("differ: 2 parameters moved from 'default' to frozen") for line in lines
    )
    assert any("weight decay 0.0001 -> 0" in line for line in lines)


def test_a_checkpoint_against_configs_previews_the_resume(tmp_path, capsys):
    from tools import train_net

    out = tmp_path / "run"
    out.mkdir()  # default_setup's job in a real run
    with loggers_restored():
        train_net.do_train(toy_run(out, "train.max_iter=4", "train.eval_period=0"), resume=False)
    status, lines = diff(capsys, str(out), f"{TOY} train.output_dir={out}")
    assert status == 0, lines
    assert lines[0] == f"A: {out}/model_final.pth (checkpoint at iteration 4)"
    assert any("restored 12, moved 0, added 0, dropped 0" in line for line in lines)
    status, lines = diff(capsys, str(out / "model_final.pth"), f"{TOY} {NEW_HEAD}")
    assert status == 1
    assert (
        "differ: 2 parameters moved from 'head' to 'new' (set by rules[0]): head.weight, head.bias"
        in lines
    )
    assert any("restored 12, moved 2, added 0, dropped 0" in line for line in lines)
    report = tmp_path / "diff.json"
    diff(capsys, str(out), f"{TOY} {NEW_HEAD}", "--json", str(report))
    data = json.loads(report.read_text())
    assert data["equal"] is False and data["a"].endswith("(checkpoint at iteration 4)")
    moved = next(c for c in data["changes"] if c["field"] == "group")
    assert moved == {
        "field": "group",
        "a": "head",
        "b": "new",
        "groups": ["head", "new"],
        "parameters": ["head.weight", "head.bias"],
        "set_by": ["rules[0]"],
    }


def test_sides_that_do_not_fit_are_one_line(tmp_path):
    with pytest.raises(ConfigError, match=r"side B: '.*nothing' does not exist; give a config"):
        diff_param_groups.main([TOY, str(tmp_path / "nothing")])
    with pytest.raises(ConfigError, match=r"side A: '.*' is a folder without a last_checkpoint"):
        diff_param_groups.main([str(tmp_path), TOY])
    (tmp_path / "model.pth").write_bytes(b"")
    with pytest.raises(ConfigError, match="overrides apply to a config, not to a checkpoint"):
        diff_param_groups.main([TOY, f"{tmp_path / 'model.pth'} optimizer.lr=1"])
    with pytest.raises(ConfigError, match=r"optimizer.lrr"):
        diff_param_groups.main([TOY, f"{TOY} optimizer.lrr=1"])


def test_the_command_line_exits_1_on_a_difference_and_2_on_a_usage_error(tmp_path):
    tool = os.path.join(ROOT, "tools", "diff_param_groups.py")
    proc = subprocess.run(
        [sys.executable, tool, TOY, f"{TOY} optimizer.lr=0.01"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 1 and "differ: base lr 0.005 -> 0.01" in proc.stdout
    proc = subprocess.run(
        [sys.executable, tool, TOY, str(tmp_path / "none.pth")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2 and proc.stderr.startswith("error: side B:")


def test_an_optimizer_route_change_is_told(capsys):
    # Muon + AdamW: a rule sending block 0 to AdamW (and, as the override replaces the config's
    # rules, the head losing its 10x: the diff shows that too).
    rule = "\"optimizer.params.rules=[{'match': 'backbone.blocks.0.*', 'optimizer': 'adamw'}]\""
    config = "projects/vit/muon_config.py"
    status, lines = diff(capsys, config, f"{config} {rule}")
    assert status == 1
    routed = next(line for line in lines if "optimizer muon -> adamw" in line)
    assert routed.startswith("differ: 'muon' -> 'adamw[wd=0.05]', 4 parameters:")
    assert "rules[0]" in routed and "backbone.blocks.0.attn.qkv.weight" in routed
    assert any("'head[wd=0.05]' -> 'adamw[wd=0.05]', 1 parameter: lr 0.005" in x for x in lines)
