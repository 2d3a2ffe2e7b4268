"""Model registries and models: backbones, heads, Mask R-CNN, the toy MLP."""

from pgtrain.modeling.backbones import FPNBackbone, build_backbone
from pgtrain.modeling.heads import build_head
from pgtrain.modeling.mask_rcnn import MaskRCNN
from pgtrain.modeling.pretrained import ensure_offline_weights, imagenet_weights
from pgtrain.modeling.registries import BACKBONES, HEADS
from pgtrain.modeling.toy import MLPClassifier

__all__ = [
    "BACKBONES",
    "HEADS",
    "FPNBackbone",
    "MLPClassifier",
    "MaskRCNN",
    "build_backbone",
    "build_head",
    "ensure_offline_weights",
    "imagenet_weights",
]
