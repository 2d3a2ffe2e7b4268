"""Tiny Mask R-CNN models and detection batches shared by the modeling tests."""

from collections.abc import Callable
from typing import Any

import pytest
import torch
from torchvision import tv_tensors

from pgtrain.modeling.backbones import build_backbone
from pgtrain.modeling.heads import build_head
from pgtrain.modeling.mask_rcnn import MaskRCNN

TINY_CHANNELS = 32


def make_tiny_maskrcnn(num_classes: int = 4, seed: int = 0, **overrides: Any) -> MaskRCNN:
    """Returns a slim MobileNetV2-FPN Mask R-CNN (P3-P6, small heads) for 64-96 px images."""
    torch.manual_seed(seed)
    options: dict[str, Any] = dict(
        backbone=build_backbone(
            "mobilenet_v2_fpn", fpn_channels=TINY_CHANNELS, returned_layers=(2, 3, 4)
        ),
        num_classes=num_classes,
        min_size=64,
        max_size=96,
        rpn_pre_nms_top_n_train=100,
        rpn_pre_nms_top_n_test=100,
        rpn_post_nms_top_n_train=50,
        rpn_post_nms_top_n_test=50,
        box_batch_size_per_image=16,
        sampling_ratio=1,
        box_head=build_head("two_mlp_box_head", in_channels=TINY_CHANNELS, representation_size=64),
        mask_head=build_head("conv_mask_head", in_channels=TINY_CHANNELS, num_convs=1, conv_dim=16),
    )
    options.update(overrides)
    return MaskRCNN(**options)


def make_item(height: int, width: int, seed: int = 0) -> tuple[tv_tensors.Image, dict]:
    """Returns one (image, target) pair of the shared data contract with two boxes and masks."""
    g = torch.Generator().manual_seed(seed)
    image = tv_tensors.Image(
        torch.randint(0, 256, (3, height, width), dtype=torch.uint8, generator=g)
    )
    boxes = torch.tensor([[4.0, 6.0, 30.0, 40.0], [20.0, 10.0, 60.0, 50.0]])
    masks = torch.zeros(2, height, width, dtype=torch.uint8)
    for mask, (x0, y0, x1, y1) in zip(masks, boxes.int().tolist(), strict=True):
        mask[y0:y1, x0:x1] = 1
    target = {
        "boxes": tv_tensors.BoundingBoxes(boxes, format="XYXY", canvas_size=(height, width)),
        "masks": tv_tensors.Mask(masks),
        "labels": torch.tensor([1, 3]),
        "image_id": seed,
        "iscrowd": torch.zeros(2, dtype=torch.int64),
        "area": (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]),
        "orig_size": (height, width),
    }
    return image, target


@pytest.fixture
def tiny_maskrcnn() -> Callable[..., MaskRCNN]:
    """Returns the factory `make_tiny_maskrcnn`."""
    return make_tiny_maskrcnn


@pytest.fixture
def tiny_batch() -> list[tuple[tv_tensors.Image, dict]]:
    """Returns a loader batch of two images of different sizes."""
    return [make_item(64, 64, seed=0), make_item(64, 80, seed=1)]
