"""Datasets, samplers and loaders."""

from pgtrain.data.loaders import build_test_loader, build_train_loader
from pgtrain.data.samplers import InferenceSampler, TrainingSampler
from pgtrain.data.toy import ToyClassificationDataset

__all__ = [
    "InferenceSampler",
    "ToyClassificationDataset",
    "TrainingSampler",
    "build_test_loader",
    "build_train_loader",
]
