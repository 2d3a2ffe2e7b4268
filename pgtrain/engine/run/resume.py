"""Resuming at another batch size: the checkpoint's position moved to this run's batch."""

import logging
from typing import Any

from pgtrain.checkpoint import CheckpointReport
from pgtrain.errors import CheckpointError, ConfigError
from pgtrain.utils.checks import is_whole

__all__ = ["checkpoint_position", "convert_position"]

logger = logging.getLogger(__name__)


def checkpoint_position(weights: CheckpointReport) -> tuple[int | None, int] | None:
    """The samples a resumed checkpoint has seen and its effective batch, as its trainer state
    records them; for an older checkpoint (no samples), the batch its dynamic batch-size LR
    scaling kept, if any; None when the batch is unknown."""
    trainer = weights.contents.get("trainer")
    trainer = trainer if isinstance(trainer, dict) else {}
    samples, batch = trainer.get("samples_seen"), trainer.get("batch")
    if is_whole(samples, at_least=0) and is_whole(batch, at_least=1):
        return samples, batch
    scaling = (trainer.get("hooks") or {}).get("BatchSizeLRScalingHook") or {}
    batch = scaling.get("batch") if isinstance(scaling, dict) else None
    return (None, batch) if is_whole(batch, at_least=1) else None


def convert_position(
    weights: CheckpointReport, train: Any, samples: int | None, old: int, new: int
) -> None:
    """Moves a resumed checkpoint's position (trained at batch `old`) to this run's batch `new`:
    the same samples seen, so the data, the schedule's fraction and the epochs continue.

    Raises:
        CheckpointError: the samples seen are unknown or not a whole number of new batches.
        ConfigError: ``train.max_iter`` is given in iterations, whose meaning the batch changes.
    """
    path, last = weights.path, weights.extra["iteration"]
    if samples is None:
        raise CheckpointError(
            f"{path} does not record the samples it has seen (saved by an older pgtrain) and "
            f"trained at effective batch {old}, this run at {new}; resume at batch {old}, or "
            f"start a new run from its weights with train.init_checkpoint={path}"
        )
    if train.get("epochs") is None:
        raise ConfigError(
            f"train.max_iter={train.max_iter} counts optimizer steps, and this run's effective "
            f"batch ({new}) is not the checkpoint's ({old}), so it would mean other data: give "
            f"the length in epochs (train.max_iter=null train.epochs=...) to convert it, or "
            f"resume at batch {old}"
        )
    if samples % new:
        raise CheckpointError(
            f"{path} has seen {samples:,} samples (batch {old}), not a whole number of batches "
            f"of {new} (this run's effective batch); resume at a batch that divides it (such "
            f"as {old}), or train on at {old} to a checkpoint whose samples it divides"
        )
    moved = samples // new - 1
    logger.info(
        "Resuming with effective batch %d (the checkpoint's: %d): %s samples seen, iteration "
        "%d at batch %d -> iteration %d at batch %d",
        *(new, old, f"{samples:,}", last + 1, old, moved + 1, new),  # iterations done
    )
    weights.extra["iteration"] = weights.contents["iteration"] = moved
    weights.contents["trainer"].update(iteration=moved, batch=new)
    if "iterations_done" in weights.contents["trainer"]:
        weights.contents["trainer"]["iterations_done"] = moved + 1
    _move_hook_positions(weights.contents["trainer"].get("hooks") or {}, moved, old, new)
    # The files counted at the old batch are set aside when training starts (not by the tools
    # that only show this run): `resume_training_state`.
    weights.extra["batch_change"] = (old, new, moved + 1)


def _move_hook_positions(hooks: dict[str, Any], moved: int, old: int, new: int) -> None:
    """Moves the positions in hook states (a schedule's iteration, dynamic LR scaling's batch)
    to the resumed iteration `moved` at batch `new`."""
    for state in hooks.values():
        if not isinstance(state, dict):
            continue
        # A schedule's position is the next iteration (saved after it stepped).
        for key in ("last_iter", "last_epoch"):
            if is_whole(state.get(key)):
                state[key] = moved + 1
        if state.get("batch") == old:  # dynamic batch-size LR scaling: this run's batch from now
            state["batch"] = new
        if is_whole(state.get("max_iter")):
            # The old run's length at this batch, for the length-change log; unknown if inexact.
            length, rest = divmod(state.pop("max_iter") * old, new)
            state.update({"max_iter": length} if not rest else {})
