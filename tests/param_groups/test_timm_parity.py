"""layer_decay with the automatic resolver equals timm's param_groups_layer_decay on timm ViTs.

timm is a test-only dependency (the `dev` extra); the models are built without weights.
"""

import pytest
import torch

from pgtrain.param_groups import build_param_groups

timm = pytest.importorskip("timm")
from timm.optim import param_groups_layer_decay  # noqa: E402

SMALL = dict(embed_dim=32, depth=3, num_heads=2, img_size=32, patch_size=8)
MODELS = [
    ("vit_tiny_patch16_224", {}),  # cls token, final norm, head
    ("deit_tiny_distilled_patch16_224", {}),  # dist token and a second head
    ("vit_base_patch16_reg4_gap_256", {}),  # register tokens, global pool with fc_norm
    ("vit_tiny_patch16_224", {"num_classes": 0}),  # no head: the last block is scale 1
]


def timm_per_parameter(model, weight_decay, decay):
    groups = param_groups_layer_decay(
        model,
        weight_decay=weight_decay,
        no_weight_decay_list=model.no_weight_decay(),
        layer_decay=decay,
    )
    by_id = {id(p): n for n, p in model.named_parameters()}
    return {by_id[id(p)]: (g["lr_scale"], g["weight_decay"]) for g in groups for p in g["params"]}


@pytest.mark.parametrize("name, extra", MODELS, ids=[f"{n}{e or ''}" for n, e in MODELS])
def test_layer_decay_matches_timm_per_parameter(name, extra):
    torch.manual_seed(0)
    model = timm.create_model(name, pretrained=False, **SMALL, **extra)
    expected = timm_per_parameter(model, 0.05, 0.65)
    groups = build_param_groups(
        model,
        builder="layer_decay",
        lr=1.0,
        weight_decay=0.05,
        decay=0.65,
        skip=list(model.no_weight_decay()),  # timm's own idiom; names tokens it may lack
    )
    got = {n: (g["lr_scale"], g["weight_decay"]) for g in groups for n in g["param_names"]}
    assert sorted(got) == sorted(expected)
    for param, (scale, wd) in expected.items():
        assert got[param][0] == pytest.approx(scale, rel=1e-12), param
        assert got[param][1] == wd, param
    assert "group_matcher of '<model>'" in groups.record.notes[0]


def test_the_final_norm_sits_with_the_last_block():
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, **SMALL)
    groups = build_param_groups(model, builder="layer_decay", lr=1.0, decay=0.5)
    scale = {n: g["lr_scale"] for g in groups for n in g["param_names"]}
    assert scale["norm.weight"] == scale["blocks.2.mlp.fc2.weight"] == 0.5
    assert scale["head.weight"] == 1.0 and scale["cls_token"] == 0.5**4
