"""Logging setup for a run: a short console log on rank 0 and a full log file on every rank."""

import logging
import os
import sys
from typing import TextIO

from iopath.common.file_io import g_pathmgr

__all__ = ["setup_logger"]

_CONSOLE_DATEFMT = "%m/%d %H:%M:%S"
_FILE_FORMAT = "[%(asctime)s] %(name)s %(levelname)s %(filename)s:%(lineno)d: %(message)s"
_FILE_DATEFMT = "%Y-%m-%d %H:%M:%S"
_GREEN, _RED, _BOLD_RED, _RESET = "\033[32m", "\033[31m", "\033[1;31m", "\033[0m"

# fvcore (checkpointing, schedulers) logs under its own name; its messages go to the same places.
_ALSO_CONFIGURED = ("fvcore",)

# Handlers are shared by the loggers and calls that ask for the same destination, so configuring
# a second logger (or calling again) never opens a log file twice or duplicates console lines.
_handlers: dict[tuple[object, ...], logging.Handler] = {}
_configured_loggers: set[str] = set()


class _ConsoleFormatter(logging.Formatter):
    """Formats ``[11/22 03:10:01 pgtrain.engine]: message``, marking warnings and errors."""

    def __init__(self, color: bool) -> None:
        super().__init__("%(message)s")
        self._color = color

    def format(self, record: logging.LogRecord) -> str:
        message = super().format(record)  # includes the traceback of logger.exception
        prefix = f"[{self.formatTime(record, _CONSOLE_DATEFMT)} {record.name}]:"
        level = f"{record.levelname}:" if record.levelno >= logging.WARNING else ""
        if self._color:
            prefix = f"{_GREEN}{prefix}{_RESET}"
            if level:
                level_color = _BOLD_RED if record.levelno >= logging.ERROR else _RED
                level = f"{level_color}{level}{_RESET}"
        return f"{prefix} {level} {message}" if level else f"{prefix} {message}"


def _console_handler(color: bool) -> logging.Handler:
    stream = sys.stdout  # looked up per call: tests and notebooks replace sys.stdout
    key = ("console", stream, color)
    if key not in _handlers:
        handler = logging.StreamHandler(stream)
        handler.setLevel(logging.INFO)
        # Escape codes only help a terminal; in a redirected log they are noise.
        handler.setFormatter(_ConsoleFormatter(color and _isatty(stream)))
        _handlers[key] = handler
    return _handlers[key]


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # replaced or closed streams
        return False


def _file_handler(output_dir: str, rank: int) -> logging.Handler:
    filename = "log.txt" if rank == 0 else f"log.txt.rank{rank}"
    path = os.path.join(output_dir, filename)
    key = ("file", os.path.abspath(path) if "://" not in path else path)
    if key not in _handlers:
        g_pathmgr.mkdirs(output_dir)
        handler = logging.StreamHandler(g_pathmgr.open(path, "a"))
        handler.setLevel(logging.DEBUG)
        handler.setFormatter(logging.Formatter(_FILE_FORMAT, datefmt=_FILE_DATEFMT))
        _handlers[key] = handler
    return _handlers[key]


def _null_handler() -> logging.Handler:
    return _handlers.setdefault(("null",), logging.NullHandler())


def _attach(logger: logging.Logger, handlers: list[logging.Handler]) -> None:
    """Makes `handlers` the logger's handlers from this module, keeping handlers added by others."""
    logger.setLevel(logging.DEBUG)
    # Not propagating keeps lines from appearing twice when the root logger has handlers too.
    logger.propagate = False
    for handler in list(logger.handlers):
        if handler in _handlers.values() and handler not in handlers:
            logger.removeHandler(handler)
    for handler in handlers:
        if handler not in logger.handlers:
            logger.addHandler(handler)
    _configured_loggers.add(logger.name)


def _close_unused_handlers() -> None:
    in_use = {h for name in _configured_loggers for h in logging.getLogger(name).handlers}
    for key, handler in list(_handlers.items()):
        if handler not in in_use:
            handler.close()  # StreamHandler.close leaves the stream open; files need it closed
            if key[0] == "file":
                handler.stream.close()
            del _handlers[key]


def setup_logger(
    output_dir: str | None = None, *, rank: int = 0, name: str = "pgtrain", color: bool = True
) -> logging.Logger:
    """Configures logger `name` (and fvcore's) for one process of a run.

    Rank 0 logs INFO and above to stdout as ``[11/22 03:10:01 pgtrain.engine]: message``. With
    `output_dir`, every rank also logs DEBUG and above with the level, file and line to
    ``output_dir/log.txt`` (rank 0) or ``output_dir/log.txt.rank{rank}`` (other ranks). Other ranks
    print nothing, not even warnings, so the console shows one copy of each line. Calling again
    replaces this function's handlers instead of adding more; child loggers
    (``pgtrain.engine.loop.trainer``) use the handlers of `name` through propagation.

    Args:
        output_dir: directory (local or an iopath URI) for the log files; None logs no files.
        rank: the process's global rank (`pgtrain.utils.comm.get_rank()`).
        name: the logger to configure, usually the top-level package.
        color: color the console prefix and warnings when stdout is a terminal.

    Returns:
        The logger `name`.
    """
    handlers: list[logging.Handler] = []
    if rank == 0:
        handlers.append(_console_handler(color))
    if output_dir is not None:
        handlers.append(_file_handler(output_dir, rank))
    if not handlers:
        # Without any handler Python prints warnings to stderr ("last resort"); stay silent.
        handlers.append(_null_handler())
    for logger_name in dict.fromkeys((name, *_ALSO_CONFIGURED)):
        _attach(logging.getLogger(logger_name), handlers)
    _close_unused_handlers()
    return logging.getLogger(name)
