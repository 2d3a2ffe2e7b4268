"""STMixerLike: the parameter layout of STMixer, a ViT backbone plus an `encoder.`.

Only the layout matters here (for the STMixer param-group parity): a VideoMAE v2 style
ViT-B (no cls token, fixed sin-cos positions, so neither is a parameter) under `backbone.`, and
a small detection "encoder" whose parameters STMixer leaves out of the backbone's groups.
"""

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["STMixerLike"]


class STMixerLike(nn.Module):
    """`backbone` features, pooled, through `encoder` to class logits.

    Args:
        backbone: a module returning (B, D) features with an ``embed_dim`` attribute.
        num_classes: outputs of the encoder.
        hidden_dim: the encoder's width.
    """

    def __init__(self, *, backbone: nn.Module, num_classes: int = 80, hidden_dim: int = 256):
        super().__init__()
        self.backbone = backbone
        self.encoder = nn.ModuleDict(
            {
                "proj": nn.Linear(backbone.embed_dim, hidden_dim),
                "norm": nn.LayerNorm(hidden_dim),
                "cls": nn.Linear(hidden_dim, num_classes),
            }
        )

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor] | torch.Tensor:
        device = self.encoder["proj"].weight.device
        x = self.encoder["norm"](
            F.gelu(self.encoder["proj"](self.backbone(batch["video"].to(device))))
        )
        logits = self.encoder["cls"](x)
        if not self.training:
            return logits
        return {"loss_cls": F.cross_entropy(logits, batch["label"].to(device))}
