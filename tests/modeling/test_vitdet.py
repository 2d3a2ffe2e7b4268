"""SimpleFeaturePyramid (ViTDet): pyramid shapes, option checks, and Mask R-CNN on a ViT."""

import pytest
import torch

from pgtrain.errors import ConfigError
from pgtrain.modeling.backbones import build_backbone
from pgtrain.modeling.registries import BACKBONES
from pgtrain.modeling.vit import VisionTransformer
from pgtrain.modeling.vitdet import SimpleFeaturePyramid
from pgtrain.param_groups.layer_ids import resolve_layer_ids

TINY_VIT = dict(img_size=64, patch_size=8, embed_dim=32, depth=2, num_heads=2)


def tiny_sfp(**options) -> SimpleFeaturePyramid:
    torch.manual_seed(0)
    return build_backbone(
        "vitdet_backbone", out_channels=32, scale_factors=(2.0, 1.0, 0.5), **TINY_VIT, **options
    )


@pytest.mark.parametrize(
    "patch_size, scale_factors, sides, strides",
    [
        (8, (2.0, 1.0, 0.5), [16, 8, 4, 2], [4, 8, 16, 32]),
        (16, (4.0, 2.0, 1.0, 0.5), [16, 8, 4, 2, 1], [4, 8, 16, 32, 64]),
    ],
)
def test_pyramid_levels_and_strides(patch_size, scale_factors, sides, strides):
    net = VisionTransformer(**{**TINY_VIT, "patch_size": patch_size})
    sfp = SimpleFeaturePyramid(net, out_channels=16, scale_factors=scale_factors).eval()
    out = sfp(torch.randn(2, 3, 64, 64))
    assert list(out) == sfp.featmap_names + ["pool"]
    assert sfp.num_levels == len(out) and sfp.strides == strides
    assert [tuple(v.shape) for v in out.values()] == [(2, 16, s, s) for s in sides]


def test_non_square_input_of_another_size_and_parameter_names():
    sfp = tiny_sfp(use_cls_token=False).eval()
    out = sfp(torch.randn(1, 3, 64, 96))  # grid 8 x 12: pos_embed interpolated
    assert out["0"].shape == (1, 32, 16, 24) and out["pool"].shape == (1, 32, 2, 3)
    assert "vitdet_backbone" in BACKBONES
    prefixes = {n.split(".")[0] for n, _ in sfp.named_parameters()}
    assert prefixes == {"net", "levels"}
    assert "net.blocks.1.attn.q_bias" in dict(sfp.named_parameters())


@pytest.mark.parametrize(
    "scale_factors, match",
    [
        ((3.0, 1.0), "powers of two"),
        ((1.0, 2.0), "decreasing"),
        ((16.0, 1.0), "too fine for patch_size=8"),
    ],
)
def test_invalid_scale_factors(scale_factors, match):
    with pytest.raises(ConfigError, match=match):
        SimpleFeaturePyramid(VisionTransformer(**TINY_VIT), scale_factors=scale_factors)


def test_video_vit_is_rejected():
    video = VisionTransformer(**TINY_VIT, num_frames=2, tubelet_size=2)
    with pytest.raises(ConfigError, match="image VisionTransformer"):
        SimpleFeaturePyramid(video)


def test_mask_rcnn_on_vitdet_trains_and_predicts(tiny_maskrcnn, tiny_batch):
    model = tiny_maskrcnn(backbone=tiny_sfp()).train()
    losses = model(tiny_batch)
    assert all(torch.isfinite(v) for v in losses.values()) and len(losses) == 5
    sum(losses.values()).backward()
    params = dict(model.named_parameters())
    assert "backbone.net.blocks.0.attn.qkv.weight" in params
    for name, p in params.items():  # every backbone tensor is used (DDP needs that)
        if name.startswith("backbone."):
            assert p.grad is not None and p.grad.abs().sum() > 0, name
    layers = resolve_layer_ids(model, list(params))  # layer decay finds the ViT by its names
    assert layers.num_layers == 2 and "'backbone.net.'" in layers.source
    assert layers.ids["backbone.net.pos_embed"] == 0
    assert layers.ids["backbone.net.blocks.1.attn.q_bias"] == 2
    model.eval()
    with torch.no_grad():
        predictions = model(tiny_batch)
    for (image, _), p in zip(tiny_batch, predictions, strict=True):
        h, w = image.shape[-2:]
        n = len(p["boxes"])
        assert 0 < n <= 100
        assert p["masks"].shape == (n, 1, h, w) and p["scores"].shape == (n,)
        assert p["boxes"][:, 2].max() <= w and p["boxes"][:, 3].max() <= h
        assert p["labels"].min() >= 1 and p["labels"].max() <= 3
