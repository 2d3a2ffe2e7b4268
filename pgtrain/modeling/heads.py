"""Box and mask heads and predictors of Mask R-CNN (HEADS entries), with torchvision's names.

Each entry returns torchvision's own module, so the parameter names inside ``roi_heads`` are
torchvision's (``box_head.fc6``, ``box_predictor.cls_score``, ``mask_head.0.0``,
``mask_predictor.mask_fcn_logits``) and torchvision checkpoints load into them. The entries
exist so configs can shrink the heads for CPU training, e.g.
``box_head=L(build_head)(name="two_mlp_box_head", in_channels=128, representation_size=256)``.
"""

from typing import Any

from torch import nn
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor

from pgtrain.errors import ConfigError
from pgtrain.modeling.registries import HEADS
from pgtrain.utils.checks import is_whole

__all__ = [
    "build_head",
    "conv_mask_head",
    "fast_rcnn_predictor",
    "mask_rcnn_predictor",
    "two_mlp_box_head",
]


def build_head(name: str, **kwargs: Any) -> nn.Module:
    """Builds the HEADS entry `name` with `kwargs`, e.g. ``build_head("fast_rcnn_predictor", ...)``.

    Raises:
        RegistryError: No such entry (the message suggests close names).
        ConfigError: An argument the entry does not take (with close names), or a bad value.
    """
    return HEADS.build(name, kwargs, kind="head")


@HEADS.register()
def two_mlp_box_head(
    *, in_channels: int, representation_size: int = 1024, resolution: int = 7
) -> TwoMLPHead:
    """Builds the box head: two fully connected layers over pooled RoI features.

    Args:
        in_channels: Channels of the pooled features (the backbone's ``out_channels``).
        representation_size: Width of both layers (1024 in torchvision).
        resolution: Side of the pooled RoI features (MaskRCNN pools boxes at 7).
    """
    _check_positive("two_mlp_box_head", in_channels=in_channels, resolution=resolution)
    _check_positive("two_mlp_box_head", representation_size=representation_size)
    return TwoMLPHead(in_channels * resolution**2, representation_size)


@HEADS.register()
def fast_rcnn_predictor(*, in_channels: int, num_classes: int) -> FastRCNNPredictor:
    """Builds the box predictor: class scores and per-class box deltas.

    Args:
        in_channels: Width of the box head's output (its ``representation_size``).
        num_classes: Number of classes including the background.
    """
    _check_positive("fast_rcnn_predictor", in_channels=in_channels)
    _check_classes("fast_rcnn_predictor", num_classes)
    return FastRCNNPredictor(in_channels, num_classes)


@HEADS.register()
def conv_mask_head(
    *, in_channels: int, num_convs: int = 4, conv_dim: int = 256, dilation: int = 1
) -> MaskRCNNHeads:
    """Builds the mask head: a stack of 3x3 convolutions over pooled RoI features.

    Args:
        in_channels: Channels of the pooled features (the backbone's ``out_channels``).
        num_convs: Number of convolutions (4 in torchvision).
        conv_dim: Channels of each convolution (256 in torchvision).
        dilation: Dilation of the convolutions.
    """
    _check_positive("conv_mask_head", in_channels=in_channels, num_convs=num_convs)
    _check_positive("conv_mask_head", conv_dim=conv_dim, dilation=dilation)
    return MaskRCNNHeads(in_channels, [conv_dim] * num_convs, dilation)


@HEADS.register()
def mask_rcnn_predictor(
    *, in_channels: int = 256, dim_reduced: int = 256, num_classes: int
) -> MaskRCNNPredictor:
    """Builds the mask predictor: a 2x up-convolution, then one mask logit map per class.

    Args:
        in_channels: Channels of the mask head's output (its ``conv_dim``).
        dim_reduced: Channels of the up-convolution (256 in torchvision).
        num_classes: Number of classes including the background.
    """
    _check_positive("mask_rcnn_predictor", in_channels=in_channels, dim_reduced=dim_reduced)
    _check_classes("mask_rcnn_predictor", num_classes)
    return MaskRCNNPredictor(in_channels, dim_reduced, num_classes)


def _check_positive(head: str, **values: Any) -> None:
    """Raises a ConfigError naming the first argument that is not a positive integer."""
    for key, value in values.items():
        if not is_whole(value, at_least=1):
            raise ConfigError(f"{head}: {key}={value!r} must be a positive integer")


def _check_classes(head: str, num_classes: Any) -> None:
    """Raises a ConfigError unless there is the background plus at least one class."""
    if not is_whole(num_classes, at_least=2):
        raise ConfigError(
            f"{head}: num_classes={num_classes!r} must be an integer >= 2 (it counts the "
            "background as class 0)"
        )
