"""tools/inspect_param_groups.py: the table, the verbose listing, --explain and --json."""

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def inspect(*args):
    cmd = [sys.executable, os.path.join(ROOT, "tools", "inspect_param_groups.py"), *args]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_table_verbose_explain_and_json(tmp_path):
    out = tmp_path / "groups.json"
    proc = inspect(
        "--config",
        "configs/quick/toy.py",
        "--verbose",
        "--explain",
        "head.bias",
        "--json",
        str(out),
        "optimizer.lr=0.01",
    )
    assert proc.returncode == 0, proc.stderr
    text = proc.stdout
    assert "default       10       9,664  0.01         1e-05         1        0.0001  -" in text
    assert (
        "head           2         260   0.1        0.0001        10        0.0001  rules[0]" in text
    )
    assert "- blocks.1.fc.weight   | shape: (64, 64)" in text and "momentum: 0.9" in text
    assert "by rules[0] (match='head.*'): lr_mult=10.0, group='head'" in text
    report = json.loads(out.read_text())
    groups = {g["name"]: g for g in report["groups"]}
    # lr: the first iteration's (warmup starts at 0.001x); initial_lr: what the schedule scales
    assert groups["head"]["initial_lr"] == 0.1 and groups["head"]["lr_scale"] == 10
    assert groups["head"]["lr"] == pytest.approx(0.1 * 0.001)
    assert [p["name"] for p in groups["head"]["params"]] == ["head.weight", "head.bias"]


def test_switching_the_builder_from_the_command_line():
    proc = inspect(
        "--config",
        "configs/quick/toy.py",
        "optimizer.params.builder=default",
        "+optimizer.params.weight_decay_norm=0.0",
        "optimizer.params.rules=[]",
    )
    assert proc.returncode == 0, proc.stderr
    assert "builder 'default'" in proc.stdout


def test_unknown_parameter_in_explain_is_a_one_line_error():
    proc = inspect("--config", "configs/quick/toy.py", "--explain", "head.bais")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == (
        "error: no parameter named 'head.bais' in the model; did you mean 'head.bias' or "
        "'head.weight' or 'stem.bias'?"
    )
