"""A tool's output path is made usable, or refused in one line, before any work is done."""

import os

import pytest

from pgtrain.errors import ConfigError
from pgtrain.utils.file_io import output_path


def test_missing_folders_are_created(tmp_path):
    path = tmp_path / "a" / "b" / "lr.png"
    assert output_path(str(path), "--out") == str(path)
    assert path.parent.is_dir() and not path.exists()
    folder = tmp_path / "vis" / "train"
    output_path(str(folder), "--output-dir", folder=True)
    assert folder.is_dir()


def test_unusable_paths_name_the_option(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ConfigError, match=r"^--out '.*file/lr\.png': cannot create folder"):
        output_path(str(blocker / "lr.png"), "--out")
    with pytest.raises(ConfigError, match=r"^--output-dir '.*file' is a file, not a folder"):
        output_path(str(blocker), "--output-dir", folder=True)
    if os.geteuid() != 0:  # root writes anywhere
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        with pytest.raises(ConfigError, match="is not writable"):
            output_path(str(locked / "x.json"), "--json")


def test_the_plot_tool_refuses_before_computing(tmp_path, capsys):
    from tests.tools.test_plot_lr import load_tool

    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ConfigError, match="--out"):
        load_tool().main(["--config", "does/not/exist.py", "--out", str(blocker / "lr.png")])
