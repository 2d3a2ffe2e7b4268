"""The evaluator protocol and inference_on_dataset."""

import logging
import time
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

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
    model: nn.Module, data_loader: Iterable[Any], evaluator: DatasetEvaluator
) -> dict[str, Any]:
    """Runs `model` in eval mode over `data_loader` and returns ``evaluator.evaluate()``.

    The model's training mode is restored afterwards.
    """
    was_training = model.training
    model.eval()
    evaluator.reset()
    start = time.perf_counter()
    count = 0
    try:
        with torch.no_grad():
            for inputs in data_loader:
                evaluator.process(inputs, model(inputs))
                count += 1
    finally:
        model.train(was_training)
    logger.info("Inference on %d batches took %.2f s", count, time.perf_counter() - start)
    return evaluator.evaluate()
