"""--head-lr-multiplier X means one thing on every shipped config: the predictors at X x base LR."""

import json
import os
import subprocess
import sys

import pytest

from pgtrain.config import LazyConfig
from pgtrain.engine import apply_grouping_arguments, build_run, default_argument_parser
from tests._repo_configs import ROOT, tiny_overrides

DETECTION_CONFIGS = [
    "projects/maskrcnn/config.py",
    "projects/maskrcnn/finetune_config.py",
    "projects/vit/vitdet_config.py",
]


def groups_with_flag(path, tmp_path, *flag):
    args = default_argument_parser().parse_intermixed_args(["--config", path, *flag])
    cfg = LazyConfig.load(os.path.join(ROOT, path))
    LazyConfig.apply_overrides(cfg, tiny_overrides(cfg, tmp_path))
    notes = apply_grouping_arguments(cfg, args)
    run = build_run(cfg, device="cpu", notes=notes)
    return cfg, run


@pytest.mark.parametrize("path", DETECTION_CONFIGS)
def test_predictors_end_at_exactly_x_times_the_base_lr(path, tmp_path):
    # Observed on the main job: the flag stacked on the config's `fresh` rule (100x and 50x).
    cfg, run = groups_with_flag(path, tmp_path, "--head-lr-multiplier", "10")
    base = cfg.optimizer.lr
    lrs = {g["name"]: g["initial_lr"] for g in run.groups}
    assert list(lrs) == ["backbone", "other", "box_head", "mask_head"]
    assert lrs["box_head"] == lrs["mask_head"] == pytest.approx(10 * base, rel=1e-12)
    assert lrs["other"] == pytest.approx(5 * base, rel=1e-12)
    assert lrs["backbone"] == pytest.approx(base, rel=1e-12)
    table = run.table()
    assert "*" not in table  # nothing composes
    assert "note: --head-lr-multiplier 10 replaced the config's grouping (builder" in table


def test_inspect_takes_the_same_flag(tmp_path):
    out = tmp_path / "groups.json"
    cmd = [
        sys.executable,
        os.path.join(ROOT, "tools", "inspect_param_groups.py"),
        "--config",
        "projects/maskrcnn/config.py",
        "--head-lr-multiplier",
        "4",
        "--json",
        str(out),
        f"shapes.root={tmp_path}",
    ]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(out.read_text())
    lrs = {g["name"]: g["initial_lr"] for g in report["groups"]}
    assert lrs["box_head"] == pytest.approx(0.02) and lrs["mask_head"] == pytest.approx(0.02)
    assert any(n.startswith("--head-lr-multiplier 4 replaced") for n in report["notes"])
    assert "replaced the config's grouping (builder 'rules' with 1 rule(s))" in proc.stdout


def test_a_bad_multiplier_is_a_one_line_error(tmp_path):
    with pytest.raises(Exception, match="--head-lr-multiplier must be a positive number"):
        groups_with_flag("projects/maskrcnn/config.py", tmp_path, "--head-lr-multiplier", "0")
