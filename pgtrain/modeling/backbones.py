"""ResNet-FPN and MobileNet-FPN backbones for torchvision's detection models (BACKBONES entries).

Every entry returns an `FPNBackbone`: ``body`` (the trunk, cut after its last returned stage)
and ``fpn`` (torchvision's FeaturePyramidNetwork), so parameter names are torchvision's
(``backbone.body.layer1.0.conv1.weight``, ``backbone.fpn.inner_blocks.0.0.weight``) and
torchvision's detector checkpoints load into them.

Stages are numbered alike for both families: stage 0 is the stem (stride 2), stages 1-4 end at
strides 4, 8, 16 and 32 (C2-C5). ``returned_layers=(2, 3, 4)`` with ``extra_pool=True`` gives
P3-P6; ``trainable_layers=k`` trains the top k stages and freezes the rest.

Options shared by every entry (all keyword-only):
    pretrained: Start from torchvision's ImageNet weights, read from the local hub cache (see
        `pgtrain.modeling.pretrained`); never downloads.
    trainable_layers: How many stages from the top train (0-5); the rest are frozen.
        Default: 3 if pretrained, else 5.
    returned_layers: Stages (1-4, strides 4-32) that feed the pyramid.
    fpn_channels: Channels of every pyramid level (256 in torchvision; 128 is cheaper).
    extra_pool: Add a max-pooled level on top (P6 over P5), as torchvision does.
    frozen_bn: Use frozen batch norm (statistics and affine fixed). Default: pretrained.
    fpn_norm: Norm layer in the pyramid's convolutions, by name (`pgtrain.modeling.heads.
        norm_layer`): None (torchvision's ``maskrcnn_resnet50_fpn``: none, convolutions with
        biases) or ``"batch_norm"`` (as torchvision's ``maskrcnn_resnet50_fpn_v2``).
    norm_eps: ``eps`` of the trunk's norm layers; None keeps torchvision's 1e-5. torchvision
        sets 0.0 on the frozen ones when it loads its original COCO Mask R-CNN weights.
"""

from collections.abc import Callable, Sequence
from functools import partial
from typing import Any, NamedTuple

from torch import Tensor, nn
from torchvision.models import mobilenet, resnet
from torchvision.models._utils import IntermediateLayerGetter
from torchvision.ops import FeaturePyramidNetwork
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool
from torchvision.ops.misc import FrozenBatchNorm2d

from pgtrain.errors import ConfigError
from pgtrain.modeling.heads import norm_layer
from pgtrain.modeling.pretrained import imagenet_weights
from pgtrain.modeling.registries import BACKBONES
from pgtrain.utils.checks import is_real, is_whole

__all__ = [
    "FPNBackbone",
    "build_backbone",
    "mobilenet_v2_fpn",
    "mobilenet_v3_large_fpn",
    "resnet18_fpn",
    "resnet34_fpn",
    "resnet50_fpn",
    "resnet101_fpn",
]

_NUM_STAGES = 5  # stem + C2..C5
_RESNET_STAGES = ("conv1", "layer1", "layer2", "layer3", "layer4")


class FPNBackbone(nn.Module):
    """A trunk returning some of its stages, and a feature pyramid over them.

    Attributes:
        body: The trunk, wrapped so that it returns the chosen stages as "0", "1", ...
        fpn: torchvision's FeaturePyramidNetwork (plus a "pool" level if ``extra_pool``), with
            `fpn_norm_layer` after its convolutions when one is given.
        out_channels: Channels of every pyramid level (MaskRCNN reads it).
        featmap_names: Levels that RoI pooling reads (the pyramid without the "pool" level).
        num_levels: Number of pyramid levels, i.e. of RPN anchor sizes.
    """

    def __init__(
        self,
        trunk: nn.Module,
        return_layers: dict[str, str],
        in_channels_list: list[int],
        out_channels: int,
        extra_pool: bool,
        fpn_norm_layer: Callable[..., nn.Module] | None = None,
    ) -> None:
        super().__init__()
        self.body = IntermediateLayerGetter(trunk, return_layers=return_layers)
        self.fpn = FeaturePyramidNetwork(
            in_channels_list,
            out_channels,
            extra_blocks=LastLevelMaxPool() if extra_pool else None,
            norm_layer=fpn_norm_layer,
        )
        self.out_channels = out_channels
        self.featmap_names = list(return_layers.values())
        self.num_levels = len(return_layers) + int(extra_pool)
        # Set by the builders when the trunk came with ImageNet weights: the FPN (and whatever
        # the detector adds) is then what a `fresh` param-group rule selects.
        self.pretrained_parameter_names: set[str] = set()

    def mark_pretrained(self) -> None:
        """Records every trunk parameter as loaded from pretrained weights."""
        self.pretrained_parameter_names = {f"body.{n}" for n, _ in self.body.named_parameters()}

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        return self.fpn(self.body(x))


def build_backbone(name: str, **kwargs: Any) -> nn.Module:
    """Builds the BACKBONES entry `name` with `kwargs`, e.g. ``build_backbone("resnet50_fpn")``.

    Raises:
        RegistryError: No such entry (the message suggests close names).
        ConfigError: An argument the entry does not take (with close names).
    """
    return BACKBONES.build(name, kwargs, where="model.backbone", kind="backbone")


class _FPNOptions(NamedTuple):
    """The options every BACKBONES entry takes, in signature order."""

    pretrained: bool
    trainable_layers: int | None
    returned_layers: Sequence[int]
    fpn_channels: int
    extra_pool: bool
    frozen_bn: bool | None
    fpn_norm: str | None
    norm_eps: float | None


def _resnet_fpn(arch: str, options: _FPNOptions) -> FPNBackbone:
    """Builds a torchvision ResNet with `options` and puts an FPN on its returned stages."""
    o = _checked(arch, options)
    weights = imagenet_weights(arch) if o.pretrained else None
    trunk = getattr(resnet, arch)(weights=weights, norm_layer=_norm_layer(o.frozen_bn, o.norm_eps))
    stages = [[getattr(trunk, n)] for n in _RESNET_STAGES]
    stages[0].append(trunk.bn1)  # the stem's norm trains with conv1 (torchvision does the same)
    _freeze_below(stages, o.trainable_layers)
    return_layers = {f"layer{k}": str(i) for i, k in enumerate(o.returned_layers)}
    # torchvision's width rule: C2 has inplanes / 8 channels, doubling per stage.
    in_channels = [trunk.inplanes // 8 * 2 ** (k - 1) for k in o.returned_layers]
    return _marked(_fpn_backbone(trunk, return_layers, in_channels, o), o)


def _mobilenet_fpn(arch: str, options: _FPNOptions) -> FPNBackbone:
    """Builds a torchvision MobileNet with `options`; stage k ends where stride 2^(k+1) ends."""
    o = _checked(arch, options)
    weights = imagenet_weights(arch) if o.pretrained else None
    net = getattr(mobilenet, arch)(weights=weights, norm_layer=_norm_layer(o.frozen_bn, o.norm_eps))
    features = net.features
    stage_of = _mobilenet_stage_of_block(features)
    stages = [
        [b for b, s in zip(features, stage_of, strict=True) if s == k] for k in range(_NUM_STAGES)
    ]
    _freeze_below(stages, o.trainable_layers)
    ends = [max(i for i, s in enumerate(stage_of) if s == k) for k in range(_NUM_STAGES)]
    return_layers = {str(ends[k]): str(i) for i, k in enumerate(o.returned_layers)}
    in_channels = [features[ends[k]].out_channels for k in o.returned_layers]
    return _marked(_fpn_backbone(features, return_layers, in_channels, o), o)


def _fpn_backbone(
    trunk: nn.Module, return_layers: dict[str, str], in_channels: list[int], o: _FPNOptions
) -> FPNBackbone:
    """Puts the pyramid of checked options `o` on `trunk`'s returned stages."""
    fpn_norm = norm_layer(o.fpn_norm, "fpn_norm")  # the name was checked by `_checked`
    return FPNBackbone(trunk, return_layers, in_channels, o.fpn_channels, o.extra_pool, fpn_norm)


def _marked(backbone: FPNBackbone, options: _FPNOptions) -> FPNBackbone:
    if options.pretrained:
        backbone.mark_pretrained()
    return backbone


def _mobilenet_stage_of_block(features: nn.Sequential) -> list[int]:
    """Returns each block's stage: the number of stride-2 convolutions up to it, minus one."""
    stage_of, downsamplings = [], 0
    for block in features:
        strides = [m.stride[0] for m in block.modules() if isinstance(m, nn.Conv2d)]
        downsamplings += int(max(strides, default=1) > 1)
        stage_of.append(min(downsamplings, _NUM_STAGES) - 1)
    return stage_of


def _freeze_below(stages: list[list[nn.Module]], trainable_layers: int) -> None:
    """Stops gradients for every stage below the top `trainable_layers` ones."""
    for modules in stages[: _NUM_STAGES - trainable_layers]:
        for module in modules:
            for p in module.parameters():
                p.requires_grad_(False)


def _norm_layer(frozen_bn: bool, eps: float | None) -> Callable[..., nn.Module]:
    # Detection batches are tiny (2 images), too few for batch statistics: freeze them.
    layer = FrozenBatchNorm2d if frozen_bn else nn.BatchNorm2d
    return layer if eps is None else partial(layer, eps=eps)


def _checked(arch: str, o: _FPNOptions) -> _FPNOptions:
    """Validates a builder's options and fills the defaults that depend on `pretrained`."""
    pretrained = bool(o.pretrained)
    trainable = o.trainable_layers
    if trainable is None:  # random weights are all worth training
        trainable = 3 if pretrained else _NUM_STAGES
    if not is_whole(trainable, at_least=0, at_most=5):
        raise ConfigError(
            f"{arch}_fpn: trainable_layers={trainable!r} must be an integer in [0, 5] (how many "
            "stages from the top train; 5 trains all)"
        )
    returned = list(o.returned_layers)
    if not returned or returned != sorted(set(returned)) or not set(returned) <= {1, 2, 3, 4}:
        raise ConfigError(
            f"{arch}_fpn: returned_layers={returned!r} must be increasing stage numbers in "
            "[1, 4] (stage k has stride 2^(k+1); [2, 3, 4] gives P3-P5)"
        )
    channels = o.fpn_channels
    if not is_whole(channels, at_least=1):
        raise ConfigError(f"{arch}_fpn: fpn_channels={channels!r} must be a positive integer")
    frozen_bn = pretrained if o.frozen_bn is None else bool(o.frozen_bn)
    norm_layer(o.fpn_norm, f"{arch}_fpn: fpn_norm")  # a bad name fails before anything is built
    eps = o.norm_eps
    if eps is not None and not is_real(eps, at_least=0):
        raise ConfigError(
            f"{arch}_fpn: norm_eps={eps!r} must be a number >= 0, or None for torchvision's 1e-5"
        )
    return _FPNOptions(
        pretrained,
        trainable,
        returned,
        channels,
        bool(o.extra_pool),
        frozen_bn,
        o.fpn_norm,
        None if eps is None else float(eps),
    )


def _fpn_builder(arch: str, build: Callable[[str, _FPNOptions], FPNBackbone], title: str):
    """Makes and registers the BACKBONES entry ``<arch>_fpn`` (one signature for all)."""

    def builder(
        *,
        pretrained: bool = False,
        trainable_layers: int | None = None,
        returned_layers: Sequence[int] = (1, 2, 3, 4),
        fpn_channels: int = 256,
        extra_pool: bool = True,
        frozen_bn: bool | None = None,
        fpn_norm: str | None = None,
        norm_eps: float | None = None,
    ) -> FPNBackbone:
        options = _FPNOptions(
            pretrained,
            trainable_layers,
            returned_layers,
            fpn_channels,
            extra_pool,
            frozen_bn,
            fpn_norm,
            norm_eps,
        )
        return build(arch, options)

    # A module-level name, so configs saved as YAML locate it (pgtrain.modeling.backbones.X).
    builder.__name__ = builder.__qualname__ = f"{arch}_fpn"
    builder.__doc__ = f"Builds a torchvision {title} + FPN; options as in the module docstring."
    return BACKBONES.register(f"{arch}_fpn", builder)


resnet18_fpn = _fpn_builder("resnet18", _resnet_fpn, "ResNet-18")
resnet34_fpn = _fpn_builder("resnet34", _resnet_fpn, "ResNet-34")
resnet50_fpn = _fpn_builder("resnet50", _resnet_fpn, "ResNet-50")
resnet101_fpn = _fpn_builder("resnet101", _resnet_fpn, "ResNet-101")
mobilenet_v2_fpn = _fpn_builder("mobilenet_v2", _mobilenet_fpn, "MobileNetV2")
mobilenet_v3_large_fpn = _fpn_builder("mobilenet_v3_large", _mobilenet_fpn, "MobileNetV3-Large")
