"""ImageClassifier: a feature backbone (e.g. a ViT) plus a linear head, on pgtrain's batches."""

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from pgtrain.errors import ConfigError, PgtrainError
from pgtrain.utils.checks import is_real, is_whole

__all__ = ["ImageClassifier"]


def _check_fraction(key: str, value: Any) -> float:
    if not is_real(value, at_least=0, below=1):
        raise ConfigError(f"model.{key}={value!r} must be a number in [0, 1)")
    return float(value)


class ImageClassifier(nn.Module):
    """Classifies ``batch["image"]`` with ``head(dropout(backbone(image)))``.

    Training mode returns ``{"loss_cls": cross-entropy}`` against ``batch["label"]``; eval mode
    returns the logits (B×num_classes), as `ClassificationEvaluator` expects. Inputs are moved to
    the model's device. The head's parameters are ``head.weight`` and ``head.bias``, so a
    param-group rule ``match="head.*"`` selects it, and the backbone's are ``backbone.*`` (layer
    ids and ``no_weight_decay()`` hints of a ViT there are found under that prefix).

    Args:
        backbone: a module mapping B×C×H×W images to B×D features.
        num_classes: the number of classes (the dataset's labels are 0..num_classes-1).
        feature_dim: D; defaults to ``backbone.embed_dim``.
        label_smoothing: cross-entropy label smoothing, in [0, 1).
        head_dropout: dropout on the features before the head, in [0, 1).
    """

    def __init__(
        self,
        *,
        backbone: nn.Module,
        num_classes: int,
        feature_dim: int | None = None,
        label_smoothing: float = 0.0,
        head_dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if not is_whole(num_classes, at_least=1):
            raise ConfigError(f"model.num_classes={num_classes!r} must be a positive integer")
        if feature_dim is None:
            feature_dim = getattr(backbone, "embed_dim", None)
        if not is_whole(feature_dim, at_least=1):
            raise ConfigError(
                f"model: {type(backbone).__name__} has no integer `embed_dim` (got "
                f"{feature_dim!r}); set model.feature_dim to the width of its output features"
            )
        self.backbone = backbone
        self.num_classes = num_classes
        self.feature_dim = feature_dim
        self.label_smoothing = _check_fraction("label_smoothing", label_smoothing)
        self.dropout = nn.Dropout(_check_fraction("head_dropout", head_dropout))
        self.head = nn.Linear(feature_dim, num_classes)
        # A small init (as timm's ViT head) keeps the first logits near uniform.
        nn.init.trunc_normal_(self.head.weight, std=0.02)
        nn.init.zeros_(self.head.bias)

    @property
    def device(self) -> torch.device:
        """The device of the model's parameters (inputs are moved there)."""
        return self.head.weight.device

    def forward(self, batch: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor] | torch.Tensor:
        """Returns ``{"loss_cls": ...}`` in training mode, else the logits."""
        if not isinstance(batch, Mapping) or "image" not in batch:
            got = list(batch) if isinstance(batch, Mapping) else type(batch).__name__
            raise PgtrainError(
                f"ImageClassifier takes batches as dicts with 'image' (and 'label' to train), "
                f"got {got}; use a dataset yielding such dicts (pgtrain.data.classification)"
            )
        features = self.backbone(batch["image"].to(self.device))
        if features.ndim != 2 or features.shape[1] != self.feature_dim:
            raise PgtrainError(
                f"model.backbone returned features of shape {tuple(features.shape)}, expected "
                f"(batch, {self.feature_dim}); use a pooled backbone or set model.feature_dim"
            )
        logits = self.head(self.dropout(features))
        if not self.training:
            return logits
        labels = batch["label"]
        self._check_labels(labels)
        loss = F.cross_entropy(logits, labels.to(self.device), label_smoothing=self.label_smoothing)
        return {"loss_cls": loss}

    def _check_labels(self, labels: torch.Tensor) -> None:
        """Rejects labels outside 0..num_classes-1 with a message, rather than a CUDA assert."""
        if labels.device.type != "cpu" or labels.numel() == 0:
            return  # checking labels already on the GPU would synchronize every step
        low, high = int(labels.min()), int(labels.max())
        if low < 0 or high >= self.num_classes:
            raise ConfigError(
                f"label {high if high >= self.num_classes else low} is outside "
                f"0..{self.num_classes - 1}; set model.num_classes to the dataset's number of "
                "classes"
            )
