"""Utilities used across pgtrain, imported as modules (``from pgtrain.utils import comm``)."""

from pgtrain.utils import comm, env, events, logger, suggest, visualization, writers

__all__ = ["comm", "env", "events", "logger", "suggest", "visualization", "writers"]
