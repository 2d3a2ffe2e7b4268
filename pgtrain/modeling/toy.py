"""MLPClassifier: a small model for the toy config, tests and benchmarks."""

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["MLPClassifier"]


class MLPClassifier(nn.Module):
    """An MLP over ``batch["features"]``; returns ``{"loss_cls": ...}`` in training, else logits.

    Parameter names: ``stem.weight/bias``, ``blocks.N.norm.weight/bias``, ``blocks.N.fc.weight/
    bias``, ``head.weight/bias`` (norms and biases give param-group rules something to select).
    """

    def __init__(
        self,
        *,
        in_dim: int = 16,
        hidden_dim: int = 64,
        depth: int = 2,
        num_classes: int = 4,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.stem = nn.Linear(in_dim, hidden_dim)
        self.blocks = nn.ModuleList(
            nn.ModuleDict(
                {"norm": nn.LayerNorm(hidden_dim), "fc": nn.Linear(hidden_dim, hidden_dim)}
            )
            for _ in range(depth)
        )
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(hidden_dim, num_classes)

    @property
    def device(self) -> torch.device:
        """The device of the model's parameters (inputs are moved there)."""
        return self.stem.weight.device

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor] | torch.Tensor:
        x = F.relu(self.stem(batch["features"].to(self.device)))
        for block in self.blocks:
            x = x + self.dropout(F.relu(block["fc"](block["norm"](x))))
        logits = self.head(x)
        if not self.training:
            return logits
        return {"loss_cls": F.cross_entropy(logits, batch["label"].to(self.device))}
