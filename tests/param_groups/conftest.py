"""Models for the param-group tests: a tiny ViT with seed 002's names, Mask R-CNN, a detector."""

import pytest
import torch
from torch import nn


class Attention(nn.Module):
    """BEiT-style attention: qkv without bias plus separate q and v biases (seed 002 names)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.qkv = nn.Linear(dim, dim * 3, bias=False)
        self.q_bias = nn.Parameter(torch.zeros(dim))
        self.v_bias = nn.Parameter(torch.zeros(dim))
        self.proj = nn.Linear(dim, dim)


class Mlp(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, dim * 2)
        self.fc2 = nn.Linear(dim * 2, dim)


class Block(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim)


class PatchEmbed(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(3, dim, kernel_size=4, stride=4)


class TinyViT(nn.Module):
    """Seed 002's parameter names: patch_embed, cls_token, pos_embed, blocks.N..., norm, head."""

    def __init__(self, depth: int = 2, dim: int = 8, num_classes: int = 3) -> None:
        super().__init__()
        self.patch_embed = PatchEmbed(dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 5, dim))
        self.blocks = nn.ModuleList(Block(dim) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)

    def no_weight_decay(self) -> set[str]:
        return {"pos_embed", "cls_token", "dist_token"}  # dist_token: declared, absent (timm)


class WrappedViT(nn.Module):
    """A ViT inside a detector-like model: ``backbone.net.blocks.3...`` plus heads outside it."""

    def __init__(self, depth: int = 4) -> None:
        super().__init__()
        self.backbone = nn.Module()
        self.backbone.net = TinyViT(depth=depth)
        self.backbone.simple_fpn = nn.Conv2d(8, 8, 1)
        self.roi_heads = nn.Linear(8, 3)


class TinyDetector(nn.Module):
    """Seed 000's name layout in miniature: backbone, rpn, box and mask predictors."""

    def __init__(self) -> None:
        super().__init__()
        self.backbone = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8))
        self.rpn = nn.Linear(8, 8)
        self.roi_heads = nn.Module()
        self.roi_heads.box_predictor = nn.Linear(8, 3)
        self.roi_heads.mask_predictor = nn.Linear(8, 5)


@pytest.fixture
def vit() -> TinyViT:
    torch.manual_seed(0)
    return TinyViT(depth=2)


@pytest.fixture
def make_vit() -> type[TinyViT]:
    """The tiny ViT class, for tests that need another depth."""
    return TinyViT


@pytest.fixture
def wrapped_vit() -> WrappedViT:
    torch.manual_seed(0)
    return WrappedViT(depth=4)


@pytest.fixture
def detector() -> TinyDetector:
    torch.manual_seed(0)
    return TinyDetector()


@pytest.fixture
def make_detector():
    """Builds a fresh TinyDetector with the same initial weights each call."""

    def make() -> TinyDetector:
        torch.manual_seed(0)
        return TinyDetector()

    return make


@pytest.fixture(scope="session")
def maskrcnn() -> nn.Module:
    """torchvision's Mask R-CNN with seed 001's 3-class predictors, on the meta device.

    Grouping needs names and shapes only; the meta device skips allocating and initializing
    44M values. Tests must not modify it.
    """
    from torchvision.models.detection import maskrcnn_resnet50_fpn
    from torchvision.models.detection.faster_rcnn import FastRCNNPredictor
    from torchvision.models.detection.mask_rcnn import MaskRCNNPredictor

    with torch.device("meta"):
        model = maskrcnn_resnet50_fpn(weights=None, weights_backbone=None, num_classes=91)
        model.roi_heads.box_predictor = FastRCNNPredictor(1024, 3)
        model.roi_heads.mask_predictor = MaskRCNNPredictor(256, 256, 3)
    return model
