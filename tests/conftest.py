"""Shared tiny CPU fixtures."""

import os
import sys

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

torch.set_num_threads(1)  # tiny models: threads cost more than they give, and CI has 2 cores


def pytest_collection_modifyitems(config, items):
    """Tests marked `cuda` skip without a GPU (PGTRAIN_GPU_TESTS_DEVICE=cpu dry-runs them)."""
    if torch.cuda.is_available() or os.environ.get("PGTRAIN_GPU_TESTS_DEVICE") == "cpu":
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (benchmarks/gpu_check.sh runs these there)")
    for item in items:
        if item.get_closest_marker("cuda") is not None:
            item.add_marker(skip)


@pytest.fixture
def toy_dataset():
    from pgtrain.data import ToyClassificationDataset

    return ToyClassificationDataset(num_samples=64, dim=8, num_classes=3, seed=0)


@pytest.fixture
def toy_model():
    from pgtrain.modeling import MLPClassifier

    torch.manual_seed(0)
    return MLPClassifier(in_dim=8, hidden_dim=16, depth=2, num_classes=3)
