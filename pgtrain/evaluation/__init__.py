"""Evaluators and the inference loop."""

from pgtrain.evaluation.classification import ClassificationEvaluator
from pgtrain.evaluation.evaluator import DatasetEvaluator, inference_on_dataset

__all__ = ["ClassificationEvaluator", "DatasetEvaluator", "inference_on_dataset"]
