"""The installed ``pgtrain`` command: every tool from any folder, ``tools/*.py`` unchanged."""

import os
import pkgutil
import subprocess
import sys

import pytest

import pgtrain.tools
from pgtrain import cli
from tests._cli_batch import ROOT


def test_every_tool_is_a_command_and_has_a_script():
    modules = {m.name for m in pkgutil.iter_modules(pgtrain.tools.__path__)}
    assert {module for module, _ in cli.COMMANDS.values()} == modules
    for module in modules:
        assert os.path.isfile(os.path.join(ROOT, "tools", f"{module}.py")), module


@pytest.fixture(autouse=True)
def _argv_kept(monkeypatch):
    monkeypatch.setattr(sys, "argv", list(sys.argv))  # cli.main sets the tool's sys.argv


def test_wrong_command_suggests_the_right_one(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["trian"])
    assert e.value.code == 2
    assert "'trian' is not a command; did you mean 'train'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        cli.main([])
    assert e.value.code == 2 and "plot-lr" in capsys.readouterr().out


def test_a_command_gets_the_tool_s_own_help(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["plot-lr", "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: pgtrain plot-lr") and "--config" in out


def test_installed_configs_are_found_from_any_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    found = cli.installed_config("projects/maskrcnn/config.py")
    assert found == os.path.join(ROOT, "projects", "maskrcnn", "config.py")
    assert cli.installed_config("mine/config.py") == "mine/config.py"  # its own error later
    (tmp_path / "projects" / "maskrcnn").mkdir(parents=True)
    (tmp_path / "projects" / "maskrcnn" / "config.py").write_text("x = 1\n")
    assert cli.installed_config("projects/maskrcnn/config.py") == "projects/maskrcnn/config.py"


def test_the_console_script_runs_a_tool_outside_the_checkout(tmp_path):
    script = os.path.join(os.path.dirname(sys.executable), "pgtrain")
    if not os.path.isfile(script):
        pytest.skip("pgtrain is not installed in this environment (pip install -e .)")
    run = subprocess.run(
        [script, "inspect", "--config", "projects/vit/config.py"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert "trainable: 86 tensors" in run.stdout
    bad = subprocess.run(
        [script, "inspect", "--config", "nowhere.py"], cwd=tmp_path, capture_output=True, text=True
    )
    assert bad.returncode != 0 and "nowhere.py" in bad.stderr and "Traceback" not in bad.stderr


def test_tools_scripts_are_the_tools_own_modules():
    from tools import lr_find, train_net

    assert train_net is sys.modules["pgtrain.tools.train_net"]
    assert lr_find.main is pgtrain.tools.lr_find.main
