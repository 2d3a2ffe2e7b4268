"""PeriodicCheckpointer: the hook that saves a checkpoint every few iterations and at the end."""

from dataclasses import dataclass
from typing import Literal

from pgtrain.checkpoint.checkpointer import Checkpointer
from pgtrain.config.schema import setting
from pgtrain.engine.loop.hook_base import HookBase
from pgtrain.engine.run.length import period_setting
from pgtrain.errors import ConfigError
from pgtrain.solver.optimizer_modes import eval_mode
from pgtrain.utils.checks import is_whole

__all__ = ["CheckpointSettings", "PeriodicCheckpointer"]


@dataclass
class CheckpointSettings:
    """``train.checkpoint``: when checkpoints are saved, how many are kept, and their format."""

    period: int | str = period_setting(
        500, "save every `period` iterations (or epochs: '2ep') and at the end", 1
    )
    keep_last: int | None = setting(
        3, "keep the last `keep_last` numbered checkpoints (this run's only)", ge=1, null="keep all"
    )
    format: Literal["auto", "file", "sharded"] = setting(
        "auto",
        "'file': one .pth written by rank 0; 'sharded': a .dcp folder every process writes its "
        "shards into; 'auto': sharded under FSDP (either loads into any run)",
    )


class PeriodicCheckpointer(HookBase):
    """Saves ``<prefix>_<iterations done:07d>`` every `period` iterations and ``<prefix>_final``
    at the end: ``model_0000020.pth`` after 20 iterations, as the console counts them ("iter
    20/100") and ``metrics.json`` stamps them.

    A checkpoint's ``iteration`` (the trainer's position, not shown to users) is the index of the
    last finished iteration, counted from 0, so training resumes at ``iteration + 1``. On
    non-main ranks the checkpointer's ``save_to_disk=False`` makes the saves no-ops, so every
    rank may run this hook.
    """

    def __init__(
        self,
        checkpointer: Checkpointer,
        period: int,
        *,
        max_iter: int | None = None,
        file_prefix: str = "model",
    ) -> None:
        """Creates the hook.

        Args:
            checkpointer: Saves the files.
            period: Save after every `period` iterations (train.checkpoint_period).
            max_iter: Iteration count of the run; None takes ``trainer.max_iter``.
            file_prefix: File name prefix.
        """
        if not is_whole(period, at_least=1):
            raise ConfigError(f"Checkpoint period={period!r} must be a positive integer")
        self.checkpointer = checkpointer
        self.period = period
        self.max_iter = max_iter
        self.file_prefix = file_prefix

    def after_step(self) -> None:
        """Saves when the iteration that just finished completes a period or the run, or when
        training stops early on request (preemption), so no finished iteration is lost."""
        iteration = self.trainer.iter
        max_iter = self.max_iter if self.max_iter is not None else self.trainer.max_iter
        last = max_iter is not None and iteration == max_iter - 1
        stopping = getattr(self.trainer, "stop_requested", False)
        names = []
        if (iteration + 1) % self.period == 0 or (stopping and not last):
            names.append(f"{self.file_prefix}_{iteration + 1:07d}")  # iterations done
        if last:
            names.append(f"{self.file_prefix}_final")
        if not names:
            return
        # Schedule-free optimizers: save the averaged point, the weights to evaluate and resume.
        with eval_mode(getattr(self.trainer, "optimizer", None)):
            for name in names:
                self.checkpointer.save(name, iteration=iteration)
