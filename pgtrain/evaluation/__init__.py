"""Evaluators and the inference loop."""

from pgtrain.evaluation.classification import ClassificationEvaluator
from pgtrain.evaluation.coco import RESULTS_FILE, COCOEvaluator
from pgtrain.evaluation.evaluator import DatasetEvaluator, inference_on_dataset

__all__ = [
    "RESULTS_FILE",
    "COCOEvaluator",
    "ClassificationEvaluator",
    "DatasetEvaluator",
    "inference_on_dataset",
]
