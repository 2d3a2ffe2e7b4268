"""Layer decay: the formula on every parameter, resolvers, prefixes, and composition with rules."""

import re

import pytest
import torch
from torch import nn

from pgtrain.errors import ConfigError
from pgtrain.param_groups import (
    LAYER_ID_RESOLVERS,
    build_param_groups,
    layer_decay_param_groups,
    resolve_layer_ids,
)


def by_name(groups):
    return {n: g for g in groups for n in g["param_names"]}


def seed002_layer_id(name: str, depth: int) -> int:
    """Seed 002's get_num_layer_for_vit, written out by hand for the test."""
    if name in ("cls_token", "mask_token", "pos_embed") or name.startswith("patch_embed"):
        return 0
    if name.startswith("blocks."):
        return int(name.split(".")[1]) + 1
    return depth + 1


def test_every_parameter_of_a_12_block_vit_gets_the_formula_scale(make_vit):
    model = make_vit(depth=12)
    decay, lr, wd = 0.75, 1e-3, 0.05
    groups = layer_decay_param_groups(
        model, lr=lr, weight_decay=wd, decay=decay, skip=["pos_embed"]
    )
    placed = by_name(groups)
    decayed = re.compile(
        r"^(patch_embed\.proj|blocks\.\d+\.(attn\.qkv|attn\.proj|mlp\.fc[12])|head)\.weight$"
    )
    for name, _ in model.named_parameters():
        layer = seed002_layer_id(name, 12)
        group = placed[name]
        assert group["lr_scale"] == decay ** (12 + 1 - layer), name
        assert group["lr"] == lr * decay ** (12 + 1 - layer), name
        assert group["weight_decay"] == (wd if decayed.match(name) else 0.0), name
        assert group["name"].startswith(f"layer_{layer}["), name
    assert len(groups) == 2 * 14  # layers 0..13, each with and without weight decay
    assert placed["blocks.11.mlp.fc2.weight"]["lr"] == lr * 0.75
    assert placed["head.weight"]["lr_scale"] == 1.0


def test_vit_inside_a_detector_under_a_prefix(wrapped_vit):
    groups = build_param_groups(wrapped_vit, builder="layer_decay", lr=1.0, decay=0.5)
    placed = by_name(groups)
    assert placed["backbone.net.cls_token"]["lr"] == 0.5**5
    assert placed["backbone.net.patch_embed.proj.weight"]["lr"] == 0.5**5
    assert placed["backbone.net.blocks.0.attn.qkv.weight"]["lr"] == 0.5**4
    assert placed["backbone.net.blocks.3.mlp.fc1.bias"]["lr"] == 0.5**1
    for outside in ("backbone.net.norm.weight", "backbone.simple_fpn.weight", "roi_heads.weight"):
        assert placed[outside]["lr"] == 1.0 and placed[outside]["name"].startswith("layer_5")
    assert "layer ids: auto: vit at 'backbone.net.' (4 blocks)" in groups.record.notes
    # the submodule's no_weight_decay() hints arrive prefixed
    pos_embed = groups.record.decisions["backbone.net.pos_embed"]
    assert pos_embed.sources() == ["layer_decay", "no_weight_decay()"]
    assert pos_embed.weight_decay == 0.0


def test_layer_decay_combined_with_head_multiplier_multiplies(wrapped_vit):
    groups = build_param_groups(
        wrapped_vit,
        builder="layer_decay",
        lr=0.1,
        decay=0.5,
        rules=[
            {"match": "roi_heads.*", "lr_mult": 10, "group": "heads"},
            {"match": "backbone.net.blocks.3.*", "lr_mult": 3},
        ],
    )
    placed = by_name(groups)
    assert placed["roi_heads.weight"]["lr"] == pytest.approx(0.1 * 10)
    assert placed["roi_heads.weight"]["name"].startswith("heads")
    assert placed["backbone.net.blocks.3.attn.proj.weight"]["lr"] == pytest.approx(0.1 * 0.5 * 3)
    assert placed["backbone.net.blocks.2.attn.proj.weight"]["lr"] == pytest.approx(0.1 * 0.25)
    explained = groups.explain("backbone.net.blocks.3.attn.proj.weight")
    assert "lr = 0.15 (base 0.1 x 0.5 x 3)" in explained
    assert "by layer_decay (decay=0.5, auto: vit at 'backbone.net.' (4 blocks)" in explained


def test_torchvision_vit_names():
    from torchvision.models.vision_transformer import VisionTransformer

    model = VisionTransformer(
        image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=16, mlp_dim=32
    )
    groups = build_param_groups(model, builder="layer_decay", lr=1.0, decay=0.5)
    placed = by_name(groups)
    for name in ("class_token", "conv_proj.weight", "encoder.pos_embedding"):
        assert placed[name]["lr"] == 0.5**3, name
    assert placed["encoder.layers.encoder_layer_0.mlp.0.weight"]["lr"] == 0.5**2
    assert placed["encoder.layers.encoder_layer_1.self_attention.in_proj_weight"]["lr"] == 0.5
    assert placed["encoder.layers.encoder_layer_1.self_attention.in_proj_bias"]["weight_decay"] == 0
    assert placed["encoder.ln.weight"]["lr"] == placed["heads.head.weight"]["lr"] == 1.0


def test_resnet_stages_on_maskrcnn(maskrcnn):
    groups = build_param_groups(
        maskrcnn, builder="layer_decay", lr=1.0, decay=0.5, weight_decay=1e-4
    )
    placed = by_name(groups)
    assert placed["backbone.body.conv1.weight"]["lr"] == 0.5**5
    assert placed["backbone.body.bn1.weight"]["weight_decay"] == 0.0
    assert placed["backbone.body.layer1.0.conv1.weight"]["lr"] == 0.5**4
    assert placed["backbone.body.layer4.2.conv3.weight"]["lr"] == 0.5**1
    for rest in (
        "backbone.fpn.inner_blocks.0.0.weight",
        "rpn.head.conv.0.0.weight",
        "roi_heads.mask_predictor.mask_fcn_logits.weight",
    ):
        assert placed[rest]["lr"] == 1.0 and placed[rest]["weight_decay"] == 1e-4, rest
    assert "layer ids: auto: resnet at 'backbone.body.' (4 blocks)" in groups.record.notes


class Plain(nn.Module):
    """No known naming: the ModuleList with most children is taken as the blocks."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Linear(2, 4)
        self.stages = nn.ModuleList(nn.Linear(4, 4) for _ in range(3))
        self.out = nn.Linear(4, 1)


def test_sequence_fallback():
    groups = build_param_groups(Plain(), builder="layer_decay", lr=1.0, decay=0.5)
    lrs = {n: g["lr"] for n, g in by_name(groups).items()}
    assert lrs == {
        "embed.weight": 0.5**4,
        "embed.bias": 0.5**4,
        "stages.0.weight": 0.5**3,
        "stages.0.bias": 0.5**3,
        "stages.1.weight": 0.5**2,
        "stages.1.bias": 0.5**2,
        "stages.2.weight": 0.5,
        "stages.2.bias": 0.5,
        "out.weight": 1.0,
        "out.bias": 1.0,
    }


class TwoViTs(nn.Module):
    def __init__(self, make_vit) -> None:
        super().__init__()
        self.student = make_vit(depth=2)
        self.teacher = make_vit(depth=3)


def test_two_vits_need_a_prefix(make_vit):
    model = TwoViTs(make_vit)
    names = [n for n, _ in model.named_parameters()]
    with pytest.raises(
        ConfigError,
        match=r"resolver 'vit' found blocks under several prefixes "
        r"\('student.', 'teacher.'\); pass prefix= to choose",
    ):
        resolve_layer_ids(model, names, "vit")
    found = resolve_layer_ids(model, names, "vit", prefix="teacher")
    assert found.num_layers == 3 and found.ids["teacher.blocks.2.norm1.weight"] == 3
    assert "student.blocks.0.norm1.weight" not in found.ids  # outside: last layer


@pytest.mark.parametrize(
    "options, message",
    [
        ({"decay": 1.5}, r"decay must be a number in \(0, 1\]"),
        ({"num_layers": 1}, "num_layers is 1 but the model has 2 blocks"),
        ({"resolver": "torchvision_vit"}, "resolver 'torchvision_vit' found no layers"),
        ({"resolver": "vti"}, "No 'vti' in LAYER_ID_RESOLVERS; did you mean 'vit'"),
    ],
)
def test_layer_decay_option_errors(vit, options, message):
    with pytest.raises(Exception, match=message):
        layer_decay_param_groups(vit, lr=1.0, **options)


def test_resolvers_are_registered():
    assert LAYER_ID_RESOLVERS.names() == [
        "auto",
        "group_matcher",
        "resnet",
        "sequence",
        "torchvision_vit",
        "vit",
    ]


def test_auto_fails_with_a_hint_when_nothing_is_layered():
    with pytest.raises(ConfigError, match="resolver 'auto' found no layers in the model"):
        build_param_groups(nn.Linear(2, 2), builder="layer_decay", lr=1.0)


def test_optimizer_steps_with_layer_decay_groups(vit):
    groups = build_param_groups(vit, builder="layer_decay", lr=1e-3, weight_decay=0.05)
    optimizer = torch.optim.AdamW(groups)
    for p in vit.parameters():
        p.grad = torch.ones_like(p)
    before = vit.blocks[0].mlp.fc1.weight.detach().clone()
    optimizer.step()
    # AdamW's first step moves by lr (times sign) plus decoupled weight decay
    lr = 1e-3 * 0.75**2
    expected = before * (1 - lr * 0.05) - lr * torch.ones_like(before) / (1 + 1e-8)
    torch.testing.assert_close(vit.blocks[0].mlp.fc1.weight.detach(), expected)
