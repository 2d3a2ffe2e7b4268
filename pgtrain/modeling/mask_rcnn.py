"""MaskRCNN: torchvision's Mask R-CNN, configured by keyword, fed by pgtrain's detection loaders.

Subclassing torchvision's model keeps its parameter names (``backbone.body…``, ``rpn.head…``,
``roi_heads.box_predictor…``, ``roi_heads.mask_predictor…``), so torchvision checkpoints load and
param-group rules written for torchvision's detector select the same tensors.
"""

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torchvision import tv_tensors
from torchvision.models.detection import MaskRCNN as TorchvisionMaskRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.faster_rcnn import TwoMLPHead
from torchvision.models.detection.rpn import RPNHead
from torchvision.ops import MultiScaleRoIAlign
from torchvision.transforms.v2 import functional as TF

from pgtrain.errors import ConfigError
from pgtrain.modeling.heads import (
    conv_mask_head,
    fast_rcnn_predictor,
    mask_rcnn_predictor,
    two_mlp_box_head,
)
from pgtrain.utils.checks import is_whole

__all__ = ["MaskRCNN"]

_BOX_POOL, _MASK_POOL = 7, 14  # RoIAlign output sides, as in torchvision
_ASPECT_RATIOS = (0.5, 1.0, 2.0)
_TARGET_KEYS = ("boxes", "labels", "masks")


class MaskRCNN(TorchvisionMaskRCNN):
    """Mask R-CNN on torchvision's implementation, taking a batch of ``(image, target)`` pairs.

    In training, `forward` returns torchvision's five losses (``loss_classifier``,
    ``loss_box_reg``, ``loss_mask``, ``loss_objectness``, ``loss_rpn_box_reg``); in eval mode a
    list of ``{"boxes", "labels", "scores", "masks"}`` per image, with boxes in the pixel
    coordinates of the image it was given and masks as N x 1 x H x W probabilities.

    The backbone may tell which pyramid levels RoI pooling reads (``featmap_names``) and how many
    levels the RPN sees (``num_levels``), as `FPNBackbone` does; otherwise torchvision's layout
    (levels "0"-"3" plus "pool") is assumed.
    """

    def __init__(
        self,
        *,
        backbone: nn.Module,
        num_classes: int,
        min_size: int | Sequence[int] = 800,
        max_size: int = 1333,
        rpn_pre_nms_top_n_train: int = 2000,
        rpn_pre_nms_top_n_test: int = 1000,
        rpn_post_nms_top_n_train: int = 2000,
        rpn_post_nms_top_n_test: int = 1000,
        box_batch_size_per_image: int = 512,
        box_detections_per_img: int = 100,
        sampling_ratio: int = 2,
        anchor_sizes: Sequence[int] | None = None,
        rpn_conv_depth: int = 1,
        box_head: nn.Module | None = None,
        box_predictor: nn.Module | None = None,
        mask_head: nn.Module | None = None,
        mask_predictor: nn.Module | None = None,
    ) -> None:
        """Builds the model; heads and predictors left as None get torchvision's defaults.

        Args:
            backbone: A module with ``out_channels`` returning a dict of pyramid levels, e.g.
                ``build_backbone("mobilenet_v2_fpn", fpn_channels=128)``.
            num_classes: Number of classes including the background (class 0).
            min_size: Shorter image side after resizing (a sequence: one picked per batch in
                training).
            max_size: Longer image side is capped at this.
            rpn_pre_nms_top_n_train: Proposals per pyramid level kept before NMS (training).
            rpn_pre_nms_top_n_test: The same at test time.
            rpn_post_nms_top_n_train: Proposals per image kept after NMS (training).
            rpn_post_nms_top_n_test: The same at test time.
            box_batch_size_per_image: Proposals per image sampled to train the box and mask heads.
            box_detections_per_img: Maximum detections per image at test time.
            sampling_ratio: RoIAlign sampling points per bin side (1 is cheapest).
            anchor_sizes: One anchor size per pyramid level; default 32, 64, ... from the finest
                level (torchvision's sizes when the pyramid is P2-P6).
            rpn_conv_depth: 3x3 convolutions of the RPN head before its two predictions (1 in
                torchvision's ``maskrcnn_resnet50_fpn``, 2 in ``maskrcnn_resnet50_fpn_v2``).
            box_head: Module over 7x7 pooled features; default a two-layer MLP of width 1024
                (``build_head("conv_fc_box_head", ...)``: convolutions, then an MLP).
            box_predictor: Module giving (scores, box deltas) for `num_classes` classes.
            mask_head: Module over 14x14 pooled features; default four 256-channel convolutions.
            mask_predictor: Module giving one mask logit map per class.

        Raises:
            ConfigError: A value is invalid or two given parts do not fit together.
        """
        channels = _backbone_channels(backbone)
        _check_num_classes(num_classes)
        names = [str(n) for n in getattr(backbone, "featmap_names", ["0", "1", "2", "3"])]
        num_levels = int(getattr(backbone, "num_levels", len(names) + 1))
        box_head, box_predictor = _box_modules(channels, num_classes, box_head, box_predictor)
        mask_head, mask_predictor = _mask_modules(channels, num_classes, mask_head, mask_predictor)
        anchors = _anchor_generator(anchor_sizes, num_levels)
        super().__init__(
            backbone,
            num_classes=None,  # torchvision requires None when the predictors are given
            min_size=tuple(min_size) if isinstance(min_size, Sequence) else min_size,
            max_size=max_size,
            rpn_anchor_generator=anchors,
            rpn_head=_rpn_head(channels, anchors, rpn_conv_depth),
            rpn_pre_nms_top_n_train=rpn_pre_nms_top_n_train,
            rpn_pre_nms_top_n_test=rpn_pre_nms_top_n_test,
            rpn_post_nms_top_n_train=rpn_post_nms_top_n_train,
            rpn_post_nms_top_n_test=rpn_post_nms_top_n_test,
            box_roi_pool=MultiScaleRoIAlign(names, _BOX_POOL, sampling_ratio),
            box_head=box_head,
            box_predictor=box_predictor,
            box_batch_size_per_image=box_batch_size_per_image,
            box_detections_per_img=box_detections_per_img,
            mask_roi_pool=MultiScaleRoIAlign(names, _MASK_POOL, sampling_ratio),
            mask_head=mask_head,
            mask_predictor=mask_predictor,
        )
        self.num_classes = num_classes

    @property
    def device(self) -> torch.device:
        """The device of the model's parameters (inputs are moved there)."""
        return next(self.parameters()).device

    def forward(self, batch: Sequence[Any]) -> dict[str, Tensor] | list[dict[str, Tensor]]:
        """Runs torchvision's Mask R-CNN on a loader batch of ``(image, target)`` pairs.

        Images (uint8 or float in [0, 1], CHW) and targets are moved to the model's device. In
        eval mode the items may be bare images and targets are ignored.

        Returns:
            The loss dict in training mode, else one prediction dict per image.
        """
        if isinstance(batch, Tensor | Mapping) or not isinstance(batch, Sequence):
            raise ConfigError(
                f"MaskRCNN takes a list of (image, target) pairs, got a {type(batch).__name__}; "
                "use a detection loader (its batches are lists, not stacked tensors)"
            )
        device = self.device
        items = [_split_item(item, self.training, i) for i, item in enumerate(batch)]
        images = [_image_on(image, device, i) for i, (image, _) in enumerate(items)]
        if not self.training:
            return super().forward(images)
        targets = [self._target_on(t, device, i) for i, (_, t) in enumerate(items)]
        return super().forward(images, targets)

    def _target_on(self, target: Mapping[str, Any], device: torch.device, i: int) -> dict:
        """Returns the boxes (XYXY), labels and masks torchvision trains on, on `device`."""
        missing = [k for k in _TARGET_KEYS if k not in target]
        if missing:
            raise ConfigError(
                f"MaskRCNN: target of batch item {i} has no {', '.join(missing)}; the dataset "
                "must give boxes, labels and masks for training"
            )
        boxes = target["boxes"]
        if isinstance(boxes, tv_tensors.BoundingBoxes):
            boxes = TF.convert_bounding_box_format(boxes, new_format="XYXY")
        labels = torch.as_tensor(target["labels"])
        if labels.numel() and (int(labels.min()) < 1 or int(labels.max()) >= self.num_classes):
            raise ConfigError(
                f"MaskRCNN: batch item {i} has labels {labels.tolist()}, outside 1.."
                f"{self.num_classes - 1}; set model.num_classes to the number of classes + 1"
            )
        return {
            "boxes": _plain(boxes).to(device, torch.float32).reshape(-1, 4),
            "labels": labels.to(device, torch.int64),
            "masks": _plain(target["masks"]).to(device, torch.uint8),
        }


def _split_item(item: Any, training: bool, i: int) -> tuple[Any, Any]:
    """Returns (image, target) of one batch item; eval batches may hold bare images."""
    if isinstance(item, tuple | list) and len(item) == 2:
        image, target = item
    else:
        image, target = item, None
    if training and not isinstance(target, Mapping):
        raise ConfigError(
            f"MaskRCNN: batch item {i} has no target dict; training needs (image, target) pairs"
        )
    return image, target


def _image_on(image: Any, device: torch.device, i: int) -> Tensor:
    """Returns `image` as a float CHW tensor in [0, 1] on `device`."""
    if not isinstance(image, Tensor) or image.dim() != 3 or image.shape[0] != 3:
        got = tuple(image.shape) if isinstance(image, Tensor) else type(image).__name__
        raise ConfigError(
            f"MaskRCNN: batch item {i} is {got}, not a 3 x H x W RGB image tensor; add "
            "torchvision.transforms.v2.ToImage() (and RGB conversion) to the dataset"
        )
    image = _plain(image).to(device, non_blocking=True)  # move uint8: 4x less to copy
    if image.dtype == torch.uint8:
        return image.float().div_(255)
    if image.is_floating_point():
        return image.float()
    raise ConfigError(f"MaskRCNN: batch item {i} has dtype {image.dtype}; use uint8 or float")


def _plain(x: Any) -> Tensor:
    """Returns a tv_tensor as a plain tensor (torchvision's internals expect plain ones)."""
    return x.as_subclass(Tensor) if isinstance(x, Tensor) else torch.as_tensor(x)


def _backbone_channels(backbone: Any) -> int:
    """Returns the backbone's ``out_channels`` or raises naming what is missing."""
    channels = getattr(backbone, "out_channels", None)
    if not isinstance(backbone, nn.Module) or not isinstance(channels, int):
        raise ConfigError(
            f"model.backbone must be an nn.Module with an int out_channels, got "
            f"{type(backbone).__name__}; build one with build_backbone(name, ...)"
        )
    return channels


def _check_num_classes(num_classes: Any) -> None:
    if not is_whole(num_classes, at_least=2):
        raise ConfigError(
            f"model.num_classes={num_classes!r} must be an integer >= 2: the number of "
            "classes plus one for the background"
        )


def _anchor_generator(sizes: Sequence[int] | None, num_levels: int) -> AnchorGenerator:
    """Returns an RPN anchor generator with one size and three aspect ratios per level."""
    sizes = [32 * 2**i for i in range(num_levels)] if sizes is None else list(sizes)
    if len(sizes) != num_levels:
        raise ConfigError(
            f"model.anchor_sizes has {len(sizes)} sizes but the backbone gives {num_levels} "
            "pyramid levels; give one size per level"
        )
    return AnchorGenerator(tuple((int(s),) for s in sizes), (_ASPECT_RATIOS,) * num_levels)


def _rpn_head(channels: int, anchors: AnchorGenerator, conv_depth: Any) -> RPNHead:
    """Returns torchvision's RPN head with `conv_depth` convolutions over `channels`."""
    if not is_whole(conv_depth, at_least=1):
        raise ConfigError(
            f"model.rpn_conv_depth={conv_depth!r} must be a positive integer (1 in torchvision's "
            "maskrcnn_resnet50_fpn, 2 in maskrcnn_resnet50_fpn_v2)"
        )
    return RPNHead(channels, anchors.num_anchors_per_location()[0], conv_depth=conv_depth)


def _box_modules(
    channels: int, num_classes: int, head: nn.Module | None, predictor: nn.Module | None
) -> tuple[nn.Module, nn.Module]:
    """Returns the box head and predictor, filling defaults and checking that they fit."""
    head = two_mlp_box_head(in_channels=channels) if head is None else head
    if isinstance(head, TwoMLPHead):
        expected = channels * _BOX_POOL**2
        fix = f"in_channels to the backbone's out_channels ({channels})"
        _check_fit("box_head", "input features", head.fc6.in_features, expected, fix)
    first = next((m for m in head.modules() if isinstance(m, nn.Conv2d)), None)
    if first is not None:  # a head that convolves the pooled features first
        fix = f"in_channels to the backbone's out_channels ({channels})"
        _check_fit("box_head", "input channels", first.in_channels, channels, fix)
    width = _last(head, nn.Linear, "out_features")
    if predictor is None:
        if width is None:
            raise ConfigError(
                "model.box_head has no Linear layer to size the box predictor; "
                "set model.box_predictor too"
            )
        return head, fast_rcnn_predictor(in_channels=width, num_classes=num_classes)
    score = getattr(predictor, "cls_score", None)
    if isinstance(score, nn.Linear):
        fix = f"num_classes to model.num_classes ({num_classes})"
        _check_fit("box_predictor", "classes", score.out_features, num_classes, fix)
        if width is not None:
            fix = f"in_channels to the box head's output width ({width})"
            _check_fit("box_predictor", "input features", score.in_features, width, fix)
    return head, predictor


def _mask_modules(
    channels: int, num_classes: int, head: nn.Module | None, predictor: nn.Module | None
) -> tuple[nn.Module, nn.Module]:
    """Returns the mask head and predictor, filling defaults and checking that they fit."""
    head = conv_mask_head(in_channels=channels) if head is None else head
    first = next((m for m in head.modules() if isinstance(m, nn.Conv2d)), None)
    if first is not None:
        fix = f"in_channels to the backbone's out_channels ({channels})"
        _check_fit("mask_head", "input channels", first.in_channels, channels, fix)
    width = _last(head, nn.Conv2d, "out_channels")
    if predictor is None:
        if width is None:
            raise ConfigError(
                "model.mask_head has no Conv2d layer to size the mask predictor; "
                "set model.mask_predictor too"
            )
        return head, mask_rcnn_predictor(
            in_channels=width, dim_reduced=width, num_classes=num_classes
        )
    logits = getattr(predictor, "mask_fcn_logits", None)
    if isinstance(logits, nn.Conv2d):
        fix = f"num_classes to model.num_classes ({num_classes})"
        _check_fit("mask_predictor", "classes", logits.out_channels, num_classes, fix)
    up = getattr(predictor, "conv5_mask", None)
    if isinstance(up, nn.ConvTranspose2d) and width is not None:
        fix = f"in_channels to the mask head's output channels ({width})"
        _check_fit("mask_predictor", "input channels", up.in_channels, width, fix)
    return head, predictor


def _last(module: nn.Module, kind: type[nn.Module], attr: str) -> int | None:
    """Returns `attr` of the last submodule of type `kind` (a head's output width), or None."""
    found = [m for m in module.modules() if isinstance(m, kind)]
    return int(getattr(found[-1], attr)) if found else None


def _check_fit(key: str, what: str, got: int, expected: int, fix: str) -> None:
    """Raises a ConfigError if a part's size `got` differs from what its input gives."""
    if got != expected:
        raise ConfigError(f"model.{key} has {got} {what} but receives {expected}; set its {fix}")
