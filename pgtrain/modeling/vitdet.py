"""ViTDet's simple feature pyramid: a detection pyramid from a plain ViT's last feature map.

As in Li et al., "Exploring Plain Vision Transformer Backbones for Object Detection" (2022): the
ViT's stride-`patch_size` token map is upsampled with transposed convolutions and downsampled
with max pooling (scale factors 4, 2, 1, 0.5 give strides 4-32 from 16-pixel patches); each
level gets a 1x1 and a 3x3 convolution, each followed by a channel layer norm, to
`out_channels`, and an extra max-pooled level on top feeds only the RPN, like torchvision's FPN.

Inside `MaskRCNN` the ViT's parameters are ``backbone.net.blocks.3...``: the ViT layer-id
resolver finds them under that prefix, and the pyramid (``backbone.levels.*``) is the last layer.
"""

import math
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pgtrain.config import check_arguments
from pgtrain.errors import ConfigError
from pgtrain.modeling.registries import BACKBONES
from pgtrain.modeling.vit import VisionTransformer
from pgtrain.utils.checks import is_whole

__all__ = ["SimpleFeaturePyramid", "vitdet_backbone"]


class _LayerNorm2d(nn.Module):
    """Layer norm over the channels of an N x C x H x W map."""

    def __init__(self, channels: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        x = x.permute(0, 2, 3, 1)
        x = F.layer_norm(x, x.shape[-1:], self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


class _Level(nn.Module):
    """One pyramid level: resample the ViT map by 2**`steps`, then project to `out_channels`."""

    def __init__(self, dim: int, steps: int, out_channels: int):
        super().__init__()
        layers: list[nn.Module] = []
        channels = dim
        for i in range(steps):  # each transposed convolution doubles the resolution
            layers.append(nn.ConvTranspose2d(channels, channels // 2, 2, stride=2))
            channels //= 2
            if i < steps - 1:
                layers += [_LayerNorm2d(channels), nn.GELU()]
        if steps < 0:
            layers.append(nn.MaxPool2d(2**-steps, stride=2**-steps))
        self.resample = nn.Sequential(*layers)  # empty: identity (the stride-16 level)
        self.proj = nn.Sequential(
            nn.Conv2d(channels, out_channels, 1, bias=False),
            _LayerNorm2d(out_channels),
            nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False),
            _LayerNorm2d(out_channels),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(self.resample(x))


class SimpleFeaturePyramid(nn.Module):
    """A ViT (``net``) and pyramid levels built from its last feature map.

    Attributes:
        net: The VisionTransformer.
        levels: One module per scale factor, finest first.
        out_channels: Channels of every level (MaskRCNN reads it).
        featmap_names: Levels that RoI pooling reads ("0", "1", ...; not "pool").
        num_levels: Number of levels the RPN sees (one anchor size each).
        strides: Stride in pixels of each level in `featmap_names`, then of "pool" if present.
    """

    def __init__(
        self,
        net: VisionTransformer,
        *,
        out_channels: int = 256,
        scale_factors: Sequence[float] = (4.0, 2.0, 1.0, 0.5),
        extra_pool: bool = True,
    ) -> None:
        """Builds the pyramid on `net`.

        Args:
            net: An image VisionTransformer (its final-norm tokens feed the pyramid).
            out_channels: Channels of every level.
            scale_factors: Resolution of each level relative to the ViT map, finest first;
                powers of two whose stride ``patch_size / factor`` is a whole number.
            extra_pool: Add a "pool" level (stride 2 max pool over the coarsest level).

        Raises:
            ConfigError: `net` is not an image ViT, or the scale factors do not fit it.
        """
        super().__init__()
        if not isinstance(net, VisionTransformer) or net.patch_embed.video:
            raise ConfigError(
                f"SimpleFeaturePyramid: net must be an image VisionTransformer (num_frames=1, "
                f"tubelet_size=1), got {type(net).__name__}"
            )
        if not is_whole(out_channels, at_least=1):
            raise ConfigError(f"vitdet: out_channels={out_channels!r} must be a positive integer")
        steps = _steps(scale_factors, net.patch_size, net.embed_dim)
        self.net = net
        self.levels = nn.ModuleList(_Level(net.embed_dim, k, out_channels) for k in steps)
        self.out_channels = out_channels
        self.featmap_names = [str(i) for i in range(len(steps))]
        self.num_levels = len(steps) + int(extra_pool)
        self.extra_pool = bool(extra_pool)
        self.strides = [net.patch_size // 2**k if k >= 0 else net.patch_size * 2**-k for k in steps]
        if extra_pool:
            self.strides.append(self.strides[-1] * 2)

    def forward(self, x: Tensor) -> "OrderedDict[str, Tensor]":
        """Returns the pyramid levels of a B x C x H x W batch, finest first, then "pool"."""
        tokens = self.net.forward_features(x)
        _, h, w = self.net.token_grid(x)
        patches = tokens[:, self.net.num_prefix_tokens :]
        fmap = patches.transpose(1, 2).reshape(x.shape[0], self.net.embed_dim, h, w)
        out = OrderedDict(
            (name, level(fmap)) for name, level in zip(self.featmap_names, self.levels, strict=True)
        )
        if self.extra_pool:
            # torchvision's LastLevelMaxPool: a 1x1 max pool with stride 2 (subsampling).
            out["pool"] = F.max_pool2d(next(reversed(out.values())), kernel_size=1, stride=2)
        return out


def _steps(scale_factors: Sequence[float], patch_size: int, dim: int) -> list[int]:
    """Returns log2 of each scale factor, checking that the pyramid can be built."""
    factors = list(scale_factors)
    steps = []
    for f in factors:
        k = math.log2(f) if isinstance(f, int | float) and f > 0 else 0.5
        if k != int(k):
            raise ConfigError(
                f"vitdet: scale_factors={factors!r} must be powers of two (e.g. 4.0, 2.0, 1.0, 0.5)"
            )
        steps.append(int(k))
    if not steps or steps != sorted(set(steps), reverse=True):
        raise ConfigError(
            f"vitdet: scale_factors={factors!r} must be distinct and decreasing (finest level "
            "first), e.g. (4.0, 2.0, 1.0, 0.5)"
        )
    if steps[0] > 0 and (patch_size % 2 ** steps[0] or dim % 2 ** steps[0]):
        raise ConfigError(
            f"vitdet: scale factor {factors[0]} is too fine for patch_size={patch_size} and "
            f"embed_dim={dim} (the stride patch_size / factor and the channels embed_dim / "
            "factor must be whole numbers)"
        )
    return steps


@BACKBONES.register()
def vitdet_backbone(
    *,
    out_channels: int = 256,
    scale_factors: Sequence[float] = (4.0, 2.0, 1.0, 0.5),
    extra_pool: bool = True,
    **vit_options: Any,
) -> SimpleFeaturePyramid:
    """Builds a VisionTransformer from `vit_options` and a SimpleFeaturePyramid on it.

    Example: ``build_backbone("vitdet_backbone", embed_dim=192, num_heads=3, img_size=256,
    out_channels=128)``; ViT defaults are ViT-Base.
    """
    check_arguments(VisionTransformer, vit_options, "vitdet_backbone")
    return SimpleFeaturePyramid(
        VisionTransformer(**vit_options),
        out_channels=out_channels,
        scale_factors=scale_factors,
        extra_pool=extra_pool,
    )
