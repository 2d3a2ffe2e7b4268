"""Model registries and models: backbones (torchvision's and timm's), heads, Mask R-CNN, the toy
MLP."""

from pgtrain.modeling.backbones import FPNBackbone, build_backbone
from pgtrain.modeling.classifier import ImageClassifier
from pgtrain.modeling.heads import build_head
from pgtrain.modeling.mask_rcnn import MaskRCNN
from pgtrain.modeling.pretrained import ensure_offline_weights, imagenet_weights
from pgtrain.modeling.registries import BACKBONES, HEADS
from pgtrain.modeling.timm_backbones import TimmFPNBackbone  # registers timm and timm_fpn
from pgtrain.modeling.toy import MLPClassifier
from pgtrain.modeling.vit import VisionTransformer
from pgtrain.modeling.vit_weights import load_vit_state_dict
from pgtrain.modeling.vitdet import SimpleFeaturePyramid

__all__ = [
    "BACKBONES",
    "HEADS",
    "FPNBackbone",
    "ImageClassifier",
    "MLPClassifier",
    "MaskRCNN",
    "SimpleFeaturePyramid",
    "TimmFPNBackbone",
    "VisionTransformer",
    "build_backbone",
    "build_head",
    "ensure_offline_weights",
    "imagenet_weights",
    "load_vit_state_dict",
]
