"""Tiny models shared by the checkpoint tests."""

from collections.abc import Callable

import pytest
import torch
from torch import nn


class TinyNet(nn.Module):
    """A backbone (with BatchNorm buffers) and a classification head."""

    def __init__(self, num_classes: int = 3) -> None:
        super().__init__()
        self.backbone = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU())
        self.head = nn.Linear(8, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))


@pytest.fixture
def make_net() -> Callable[..., TinyNet]:
    """Returns a factory of TinyNet with a chosen seed and number of classes."""

    def make(seed: int = 0, num_classes: int = 3) -> TinyNet:
        torch.manual_seed(seed)
        return TinyNet(num_classes)

    return make
