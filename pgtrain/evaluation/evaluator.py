"""The evaluator protocol and inference_on_dataset."""

import logging
from collections.abc import Iterable, Iterator
from typing import Any

import torch
from torch import nn

from pgtrain.utils import comm, sharding
from pgtrain.utils.progress import Progress

__all__ = ["DatasetEvaluator", "inference_on_dataset"]

logger = logging.getLogger(__name__)


class DatasetEvaluator:
    """Accumulates a model's outputs over a dataset and computes metrics.

    `reset` starts over, `process` sees each batch's inputs and outputs, `evaluate` gathers
    across processes and returns ``{metric: number}`` on every rank (nested dicts allowed).
    """

    def reset(self) -> None:
        """Clears what earlier calls accumulated."""

    def process(self, inputs: Any, outputs: Any) -> None:
        """Accumulates one batch."""
        raise NotImplementedError

    def evaluate(self) -> dict[str, Any]:
        """Returns the metrics over everything processed since `reset`."""
        raise NotImplementedError


def inference_on_dataset(
    model: nn.Module,
    data_loader: Iterable[Any],
    evaluator: DatasetEvaluator,
    *,
    lockstep: bool | None = None,
) -> dict[str, Any]:
    """Runs `model` in eval mode over `data_loader` and returns ``evaluator.evaluate()``.

    The model's training mode is restored afterwards. With `lockstep` (a model sharded by FSDP,
    ``run.strategy.lockstep_eval``), which gathers its parameters in every forward with all
    processes together, a process whose share of the data ended runs its last batch again (its
    outputs unused) until every process is done. None: lockstep when the model's parameters are
    shards (`pgtrain.utils.sharding`) and there are several processes.
    """
    was_training = model.training
    model.eval()
    evaluator.reset()
    try:
        total: int | None = len(data_loader)  # type: ignore[arg-type]
    except TypeError:  # an iterable without a length
        total = None
    progress = Progress("Inference", total, logger, unit="batch")
    # (batch, whether its outputs count)
    if lockstep is None:
        lockstep = comm.get_world_size() > 1 and any(map(sharding.is_sharded, model.parameters()))
    batches = _lockstep(data_loader) if lockstep else ((b, True) for b in data_loader)
    try:
        with torch.no_grad():
            for inputs, real in batches:
                outputs = model(inputs)
                if real:
                    evaluator.process(inputs, outputs)
                    progress.update()
    finally:
        model.train(was_training)
    progress.close()
    return evaluator.evaluate()


def _lockstep(data_loader: Iterable[Any]) -> Iterator[tuple[Any, bool]]:
    """Yields ``(batch, True)`` for each batch, then ``(last batch, False)`` while another
    process still has batches (one small all-gather per batch)."""
    batches = iter(data_loader)
    last = None
    while True:
        batch = next(batches, None)
        if not any(comm.all_gather(batch is not None)):
            return
        if batch is None:
            if last is None:
                raise RuntimeError("a process has no test data while others have some")
            yield last, False
        else:
            last = batch
            yield batch, True
