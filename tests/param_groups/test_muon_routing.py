"""The `muon` builder's routes on models pgtrain did not write (torchvision, timm, offline, no
weights) and on the cases that shape and name alone get wrong: a classifier not called head or
fc, a 2-D position table, a linear patch embedding, an output layer tied to an embedding.

Each model's test lists every parameter that goes to AdamW beyond the 1-D ones, with its reason;
everything else must be a hidden matrix or conv filter on Muon."""

import pytest
import torch
import torchvision.models as tvm
from torch import nn

from pgtrain.param_groups import build_param_groups, collect_model_params, muon_routes
from pgtrain.param_groups.builders.muon import (
    BARE_MATRIX,
    CONV,
    EMBEDDING,
    MATRIX,
    NAMED_TABLE,
    NO_WEIGHT_DECAY,
    ONE_D,
    SHAPE,
    TIED,
)

timm = pytest.importorskip("timm")

STEM = "adamw: the stem (the model's first conv or linear layer)"
TIMM_STEM = "adamw: the stem (declared by pretrained_cfg['first_conv'])"
TIMM_CLASSIFIER = "adamw: the classifier (declared by get_classifier())"


def classifier(attribute):
    return f"adamw: the classifier (the last linear layer in the model's '{attribute}')"


def check_routes(model, expected):
    """Asserts that the AdamW parameters are the 1-D ones plus exactly `expected` (name -> why)
    and that every other parameter is a matrix or conv filter on Muon; returns the counts."""
    params = collect_model_params(model)
    got = dict(zip(params.names, muon_routes(params), strict=True))
    adamw = {n: r.why for n, r in got.items() if r.optimizer == "adamw" and r != ONE_D}
    assert adamw == expected
    for name, route in got.items():
        if name not in expected:
            shape = tuple(dict(model.named_parameters())[name].shape)
            want = ONE_D if len(shape) < 2 else (CONV if len(shape) > 2 else MATRIX)
            assert route == want, (name, shape)
    return {r: sum(x.optimizer == r for x in got.values()) for r in ("muon", "adamw")}


def depthwise(model, why=SHAPE["depthwise"].why):
    return {
        f"{n}.weight": why
        for n, m in model.named_modules()
        if isinstance(m, nn.Conv2d) and m.groups == m.in_channels > 1
    }


def named(model, suffix, why):
    return {n: why for n, _ in model.named_parameters() if n.endswith(suffix)}


def test_torchvision_resnet18():
    counts = check_routes(tvm.resnet18(), {"conv1.weight": STEM, "fc.weight": classifier("fc")})
    assert counts == {"muon": 19, "adamw": 43}


def test_torchvision_convnext_tiny():
    model = tvm.convnext_tiny()
    expected = {
        "features.0.0.weight": STEM,
        "classifier.2.weight": classifier("classifier"),  # after a norm and a flatten
        **depthwise(model),
        **named(model, "layer_scale", SHAPE["unit"].why),  # (C, 1, 1)
    }
    assert check_routes(model, expected) == {"muon": 39, "adamw": 143}


def test_torchvision_swin_t():
    model = tvm.swin_t()
    expected = {
        "features.0.0.weight": STEM,
        "head.weight": classifier("head"),
        # (169, heads): 2-D, and (169, 6) would pass every shape rule.
        **named(model, "relative_position_bias_table", NAMED_TABLE.why),
    }
    assert len(expected) == 14
    assert check_routes(model, expected) == {"muon": 51, "adamw": 122}


def test_torchvision_vision_transformer():
    model = tvm.VisionTransformer(
        image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=32, mlp_dim=64
    )
    expected = {
        "conv_proj.weight": STEM,
        "class_token": NAMED_TABLE.why,
        "encoder.pos_embedding": NAMED_TABLE.why,
        "heads.head.weight": classifier("heads"),
    }
    # nn.MultiheadAttention's in_proj_weight is a matrix of an attention layer: Muon.
    assert check_routes(model, expected) == {"muon": 8, "adamw": 24}


@pytest.mark.parametrize(
    "make, last, counts",
    [
        (tvm.mobilenet_v2, "classifier.1.weight", {"muon": 34, "adamw": 124}),
        (tvm.mobilenet_v3_small, "classifier.3.weight", {"muon": 41, "adamw": 101}),
    ],
)
def test_torchvision_mobilenets(make, last, counts):
    model = make()
    expected = {"features.0.0.weight": STEM, last: classifier("classifier"), **depthwise(model)}
    assert check_routes(model, expected) == counts


def test_timm_vit_tiny():
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False)
    expected = {
        "patch_embed.proj.weight": TIMM_STEM,
        "cls_token": NO_WEIGHT_DECAY.why,
        "pos_embed": NO_WEIGHT_DECAY.why,
        "head.weight": TIMM_CLASSIFIER,
    }
    assert check_routes(model, expected) == {"muon": 48, "adamw": 104}


def test_timm_convnext_atto():
    model = timm.create_model("convnext_atto", pretrained=False)
    expected = {"stem.0.weight": TIMM_STEM, "head.fc.weight": TIMM_CLASSIFIER, **depthwise(model)}
    assert check_routes(model, expected) == {"muon": 27, "adamw": 101}


def test_timm_swin_tiny():
    model = timm.create_model("swin_tiny_patch4_window7_224", pretrained=False)
    expected = {
        "patch_embed.proj.weight": TIMM_STEM,
        "head.fc.weight": TIMM_CLASSIFIER,
        **named(model, "relative_position_bias_table", NO_WEIGHT_DECAY.why),
    }
    assert check_routes(model, expected) == {"muon": 51, "adamw": 122}


def test_timm_resnet18():
    model = timm.create_model("resnet18", pretrained=False)
    expected = {"conv1.weight": TIMM_STEM, "fc.weight": TIMM_CLASSIFIER}
    assert check_routes(model, expected) == {"muon": 19, "adamw": 43}


class LinearPatchViT(nn.Module):
    """A ViT in the style of lucidrains' vit-pytorch: linear patch embedding, a 2-D position
    table, a classifier in ``mlp_head``; nothing declared."""

    def __init__(self, dim=16, patches=9, classes=5):
        super().__init__()
        self.to_patch_embedding = nn.Linear(48, dim)
        self.pos_embedding = nn.Parameter(torch.zeros(patches, dim))
        self.table = nn.Parameter(torch.zeros(patches, dim))  # no role, no telling name
        self.blocks = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))
        self.mlp_head = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, classes))


class DeclaredTableViT(LinearPatchViT):
    def no_weight_decay(self):
        return {"table"}


def test_what_shape_and_module_names_got_wrong():
    model = LinearPatchViT()
    expected = {
        "to_patch_embedding.weight": STEM,
        "pos_embedding": NAMED_TABLE.why,
        "mlp_head.1.weight": classifier("mlp_head"),
    }
    params = collect_model_params(model)
    got = dict(zip(params.names, muon_routes(params), strict=True))
    adamw = {n: r.why for n, r in got.items() if r.optimizer == "adamw" and r != ONE_D}
    assert adamw == expected
    assert got["table"] == BARE_MATRIX  # a 2-D parameter of no declared role: a matrix
    assert got["blocks.0.weight"] == got["blocks.2.weight"] == MATRIX
    # Declared in no_weight_decay(), the same table is a lookup table.
    params = collect_model_params(DeclaredTableViT())
    assert muon_routes(params)[params.names.index("table")] == NO_WEIGHT_DECAY


class TinyLM(nn.Module):
    """An embedding, two hidden layers and an output layer that shares the embedding's tensor."""

    def __init__(self, vocab=32, dim=16):
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.blocks = nn.Sequential(nn.Linear(dim, dim), nn.Linear(dim, dim))
        self.lm_out = nn.Linear(dim, vocab, bias=False)
        self.lm_out.weight = self.embed.weight


def test_embeddings_and_what_is_tied_to_them():
    model = TinyLM()
    params = collect_model_params(model)
    got = dict(zip(params.names, muon_routes(params), strict=True))
    assert got["embed.weight"] == TIED and TIED.why == (
        "adamw: tied to an embedding (one tensor, several modules)"
    )
    # The embedding sees the input, so the first linear is a hidden layer, not a stem.
    assert got["blocks.0.weight"] == got["blocks.1.weight"] == MATRIX
    untied = TinyLM()
    untied.lm_out.weight = nn.Parameter(torch.zeros(32, 16))
    params = collect_model_params(untied)
    got = dict(zip(params.names, muon_routes(params), strict=True))
    assert got["embed.weight"] == EMBEDDING
    # No declared classifier and no telling name: lm_out is a matrix by shape (32 x 16).
    assert got["lm_out.weight"] == MATRIX


def test_the_builder_explains_a_declared_role():
    model = timm.create_model("convnext_atto", pretrained=False)
    groups = build_param_groups(model, builder="muon", lr=1e-3, weight_decay=0.05)
    assert "by adamw: the classifier (declared by get_classifier())" in groups.explain(
        "head.fc.weight"
    )
    assert "by adamw: the stem (declared by pretrained_cfg['first_conv'])" in groups.explain(
        "stem.0.weight"
    )
    fc = next(g for g in groups if "head.fc.weight" in g["param_names"])
    assert fc["optimizer"] == "adamw" and "adamw: classifier (get_classifier())" in fc["rules"]
