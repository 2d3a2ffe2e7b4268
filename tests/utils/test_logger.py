"""setup_logger: console on rank 0 only, a log file per rank, idempotent, fvcore included."""

import io
import logging
import re

import pytest

from pgtrain.utils.logger import setup_logger
from tests._loggers import loggers_restored


@pytest.fixture(autouse=True)
def _restore_loggers():
    """Puts the loggers back as they were, so other tests (caplog) see pgtrain's records."""
    with loggers_restored():
        yield


def test_rank0_console_short_format_and_full_file(tmp_path, capsys):
    setup_logger(str(tmp_path), rank=0, color=False)
    log = logging.getLogger("pgtrain.engine")
    log.info("hello")
    log.debug("details")
    log.warning("careful")

    out = capsys.readouterr().out.splitlines()
    assert len(out) == 2  # DEBUG stays out of the console
    assert re.fullmatch(r"\[\d\d/\d\d \d\d:\d\d:\d\d pgtrain\.engine\]: hello", out[0])
    assert re.fullmatch(r"\[.* pgtrain\.engine\]: WARNING: careful", out[1])

    text = (tmp_path / "log.txt").read_text()
    assert re.search(r"pgtrain\.engine INFO test_logger\.py:\d+: hello", text)
    assert "pgtrain.engine DEBUG" in text and "details" in text
    assert "pgtrain.engine WARNING" in text


def test_other_ranks_write_only_their_file(tmp_path, capsys):
    setup_logger(str(tmp_path), rank=2)
    logging.getLogger("pgtrain.data").warning("rank two speaking")
    captured = capsys.readouterr()
    assert captured.out == captured.err == ""
    assert "rank two speaking" in (tmp_path / "log.txt.rank2").read_text()
    assert not (tmp_path / "log.txt").exists()


def test_other_ranks_without_output_dir_are_silent(capsys):
    setup_logger(None, rank=1)
    logging.getLogger("pgtrain").error("should not be printed")
    captured = capsys.readouterr()
    assert captured.out == captured.err == ""


def test_calling_twice_does_not_duplicate_lines(tmp_path, capsys):
    setup_logger(str(tmp_path), rank=0, color=False)
    handlers = list(logging.getLogger("pgtrain").handlers)
    lg = setup_logger(str(tmp_path), rank=0, color=False)
    assert lg.handlers == handlers
    lg.info("once")
    assert capsys.readouterr().out.count("once") == 1
    assert (tmp_path / "log.txt").read_text().count("once") == 1


def test_new_output_dir_replaces_the_old_file(tmp_path):
    setup_logger(str(tmp_path / "a"), rank=0, color=False)
    setup_logger(str(tmp_path / "b"), rank=0, color=False)
    logging.getLogger("pgtrain").info("second run")
    assert "second run" in (tmp_path / "b" / "log.txt").read_text()
    assert "second run" not in (tmp_path / "a" / "log.txt").read_text()


def test_fvcore_logs_to_the_same_places(tmp_path, capsys):
    setup_logger(str(tmp_path), rank=0, color=False)
    logging.getLogger("fvcore.common.checkpoint").info("loading weights")
    assert "fvcore.common.checkpoint]: loading weights" in capsys.readouterr().out
    assert "loading weights" in (tmp_path / "log.txt").read_text()


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize(("stream", "colored"), [(_Terminal(), True), (io.StringIO(), False)])
def test_color_only_on_a_terminal(monkeypatch, stream, colored):
    monkeypatch.setattr("sys.stdout", stream)
    setup_logger(rank=0, color=True)
    logging.getLogger("pgtrain").warning("watch out")
    assert ("\033[" in stream.getvalue()) == colored
    assert "WARNING:" in stream.getvalue()
