"""Checkpointing on iopath paths: atomic saves, weights_only loads, and load reports."""

from pgtrain.checkpoint.checkpointer import Checkpointer, read_any_checkpoint
from pgtrain.checkpoint.report import CheckpointReport

__all__ = ["CheckpointReport", "Checkpointer", "read_any_checkpoint"]
