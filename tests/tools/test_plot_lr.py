"""tools/plot_lr.py: every group's LR curve, without training."""

import importlib.util
import os
import subprocess
import sys

import pytest

from pgtrain.config import LazyConfig

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def load_tool():
    spec = importlib.util.spec_from_file_location(
        "plot_lr", os.path.join(ROOT, "tools", "plot_lr.py")
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_one_line_per_group_with_the_groups_lrs(tmp_path):
    tool = load_tool()
    cfg = LazyConfig.load(os.path.join(ROOT, "configs", "quick", "toy.py"))
    LazyConfig.apply_overrides(cfg, ["train.max_iter=100", "optimizer.lr=0.01"])
    curves = tool.lr_curves(cfg)
    assert set(curves) == {"default", "head"} and len(curves["head"]) == 100
    assert curves["head"][50] == pytest.approx(0.1) and curves["default"][50] == pytest.approx(0.01)
    fig = tool.plot(curves, str(tmp_path / "lr.png"), log=True)
    lines = fig.axes[0].get_lines()
    assert [ln.get_label() for ln in lines] == ["default", "head"]
    assert list(lines[1].get_ydata()) == curves["head"]


def test_command_line_writes_a_png(tmp_path):
    out = tmp_path / "lr.png"
    proc = subprocess.run(
        [
            sys.executable,
            os.path.join(ROOT, "tools", "plot_lr.py"),
            "--config",
            "configs/quick/toy.py",
            "--out",
            str(out),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert "2 groups, 300 iterations" in proc.stdout
    data = out.read_bytes()
    assert data.startswith(b"\x89PNG") and len(data) > 10_000
