"""Box and mask heads and predictors of Mask R-CNN (HEADS entries), with torchvision's names.

Each entry returns torchvision's own module, so the parameter names inside ``roi_heads`` are
torchvision's (``box_head.fc6``, ``box_predictor.cls_score``, ``mask_head.0.0``,
``mask_predictor.mask_fcn_logits``) and torchvision checkpoints load into them. The entries
exist so configs can shrink the heads for CPU training, e.g.
``box_head=L(build_head)(name="two_mlp_box_head", in_channels=128, representation_size=256)``,
or build the heads of torchvision's ``maskrcnn_resnet50_fpn_v2`` (``conv_fc_box_head`` and
``conv_mask_head`` with ``norm="batch_norm"``).

Norm layers are named by a string, so configs saved as YAML keep them: None (no norm layer, the
convolutions have biases), ``"batch_norm"`` (``nn.BatchNorm2d``) or ``"frozen_batch_norm"``
(torchvision's ``FrozenBatchNorm2d``); see `norm_layer`.
"""

from collections.abc import Callable, Sequence
from typing import Any

from torch import nn
from torchvision.models.detection.faster_rcnn import (
    FastRCNNConvFCHead,
    FastRCNNPredictor,
    TwoMLPHead,
)
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
from torchvision.ops.misc import FrozenBatchNorm2d

from pgtrain.errors import ConfigError
from pgtrain.modeling.registries import HEADS
from pgtrain.utils.checks import is_whole

__all__ = [
    "NORM_LAYERS",
    "build_head",
    "conv_fc_box_head",
    "conv_mask_head",
    "fast_rcnn_predictor",
    "mask_rcnn_predictor",
    "norm_layer",
    "two_mlp_box_head",
]

# The norm layers a config can name (`norm_layer`); None means none.
NORM_LAYERS: dict[str, Callable[..., nn.Module]] = {
    "batch_norm": nn.BatchNorm2d,
    "frozen_batch_norm": FrozenBatchNorm2d,
}


def norm_layer(name: str | None, where: str) -> Callable[..., nn.Module] | None:
    """Returns the norm layer class a config names (None: no norm layer).

    Args:
        name: None, or a key of `NORM_LAYERS` (``"batch_norm"``, ``"frozen_batch_norm"``).
        where: The option, for the message, e.g. ``"conv_mask_head: norm"``.

    Raises:
        ConfigError: `name` is not None nor a known norm layer.
    """
    if name is None:
        return None
    if isinstance(name, str) and name in NORM_LAYERS:
        return NORM_LAYERS[name]
    known = ", ".join(repr(k) for k in NORM_LAYERS)
    raise ConfigError(
        f"{where}={name!r} is not a norm layer; use None (no norm, torchvision's default) or one "
        f"of {known}"
    )


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
def conv_fc_box_head(
    *,
    in_channels: int,
    conv_dims: Sequence[int] = (256, 256, 256, 256),
    fc_dims: Sequence[int] = (1024,),
    norm: str | None = None,
    resolution: int = 7,
) -> FastRCNNConvFCHead:
    """Builds a box head of 3x3 convolutions, then fully connected layers (torchvision's
    ``FastRCNNConvFCHead``; ``maskrcnn_resnet50_fpn_v2`` uses four 256-channel convolutions with
    ``norm="batch_norm"`` and one layer of 1024).

    Args:
        in_channels: Channels of the pooled features (the backbone's ``out_channels``).
        conv_dims: Channels of each convolution.
        fc_dims: Width of each fully connected layer (at least one: the predictor's input).
        norm: Norm layer after each convolution (see `norm_layer`); None: none.
        resolution: Side of the pooled RoI features (MaskRCNN pools boxes at 7).
    """
    _check_positive("conv_fc_box_head", in_channels=in_channels, resolution=resolution)
    convs, fcs = list(conv_dims), list(fc_dims)
    for key, dims, least in (("conv_dims", convs, 0), ("fc_dims", fcs, 1)):
        if len(dims) < least or not all(is_whole(d, at_least=1) for d in dims):
            raise ConfigError(
                f"conv_fc_box_head: {key}={dims!r} must be a list of positive integers"
                + (" (at least one: the box predictor reads the last)" if least else "")
            )
    layer = norm_layer(norm, "conv_fc_box_head: norm")
    return FastRCNNConvFCHead((in_channels, resolution, resolution), convs, fcs, layer)


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
    *,
    in_channels: int,
    num_convs: int = 4,
    conv_dim: int = 256,
    dilation: int = 1,
    norm: str | None = None,
) -> MaskRCNNHeads:
    """Builds the mask head: a stack of 3x3 convolutions over pooled RoI features.

    Args:
        in_channels: Channels of the pooled features (the backbone's ``out_channels``).
        num_convs: Number of convolutions (4 in torchvision).
        conv_dim: Channels of each convolution (256 in torchvision).
        dilation: Dilation of the convolutions.
        norm: Norm layer after each convolution (see `norm_layer`); None (torchvision's
            ``maskrcnn_resnet50_fpn``): none, ``"batch_norm"``: as ``maskrcnn_resnet50_fpn_v2``.
    """
    _check_positive("conv_mask_head", in_channels=in_channels, num_convs=num_convs)
    _check_positive("conv_mask_head", conv_dim=conv_dim, dilation=dilation)
    layer = norm_layer(norm, "conv_mask_head: norm")
    return MaskRCNNHeads(in_channels, [conv_dim] * num_convs, dilation, norm_layer=layer)


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
