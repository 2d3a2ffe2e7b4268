"""Logger state for tests that call `setup_logger` (directly or through a tool's `main`)."""

import contextlib
import logging
from collections.abc import Iterator

from pgtrain.utils import logger as logger_module

CONFIGURED = ("pgtrain", "fvcore")


@contextlib.contextmanager
def loggers_restored() -> Iterator[None]:
    """Puts pgtrain's and fvcore's loggers back as they were afterwards (handlers, level,
    propagation) and closes the log files opened meanwhile, so later tests (caplog, capsys) see
    records as they expect and no handler writes to a stream pytest has closed."""
    saved = {}
    for name in CONFIGURED:
        lg = logging.getLogger(name)
        saved[name] = (list(lg.handlers), lg.level, lg.propagate)
    try:
        yield
    finally:
        for name, (handlers, level, propagate) in saved.items():
            lg = logging.getLogger(name)
            lg.handlers[:] = handlers
            lg.setLevel(level)
            lg.propagate = propagate
        logger_module._close_unused_handlers()
