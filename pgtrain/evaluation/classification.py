"""ClassificationEvaluator: top-k accuracy over all processes."""

from collections.abc import Sequence
from typing import Any

import torch

from pgtrain.evaluation.evaluator import DatasetEvaluator
from pgtrain.utils import comm

__all__ = ["ClassificationEvaluator"]


class ClassificationEvaluator(DatasetEvaluator):
    """Top-k accuracy (in percent) of logits against ``inputs[label_key]``.

    Args:
        topk: the k's to report, e.g. (1, 5) gives ``{"top1": ..., "top5": ...}``; a k larger than
            the number of classes counts every sample as correct.
        label_key: where the labels are in each input batch.
    """

    def __init__(self, topk: Sequence[int] = (1, 5), label_key: str = "label") -> None:
        self._topk = tuple(topk)
        self._label_key = label_key
        self._correct = [0] * len(self._topk)
        self._total = 0

    def reset(self) -> None:
        self._correct = [0] * len(self._topk)
        self._total = 0

    def process(self, inputs: Any, outputs: torch.Tensor) -> None:
        labels = inputs[self._label_key].to(outputs.device)
        ranked = outputs.argsort(dim=1, descending=True)
        hits = ranked == labels[:, None]
        for i, k in enumerate(self._topk):
            self._correct[i] += int(hits[:, :k].any(dim=1).sum())
        self._total += len(labels)

    def evaluate(self) -> dict[str, Any]:
        gathered = comm.all_gather((self._correct, self._total))
        total = sum(t for _, t in gathered)
        if total == 0:
            return {}
        return {
            f"top{k}": 100.0 * sum(c[i] for c, _ in gathered) / total
            for i, k in enumerate(self._topk)
        }
