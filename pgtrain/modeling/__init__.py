"""Model registries and models."""

from pgtrain.modeling.registries import BACKBONES, HEADS
from pgtrain.modeling.toy import MLPClassifier

__all__ = ["BACKBONES", "HEADS", "MLPClassifier"]
