"""VisionTransformer: shapes, seed-002 names, pos_embed interpolation, drop path, weight loading."""

import pytest
import torch

from pgtrain.checkpoint import Checkpointer
from pgtrain.errors import ConfigError
from pgtrain.modeling.backbones import build_backbone
from pgtrain.modeling.registries import BACKBONES
from pgtrain.modeling.vit import VisionTransformer
from pgtrain.modeling.vit_weights import load_vit_state_dict

TINY = dict(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2)
# Seed 002's listing (VideoMAE v2 ViT-B: no cls token, fixed sin-cos table), cut to two blocks.
SEED_BLOCK = [
    "norm1.weight",
    "norm1.bias",
    "attn.q_bias",
    "attn.v_bias",
    "attn.qkv.weight",
    "attn.proj.weight",
    "attn.proj.bias",
    "norm2.weight",
    "norm2.bias",
    "mlp.fc1.weight",
    "mlp.fc1.bias",
    "mlp.fc2.weight",
    "mlp.fc2.bias",
]
SEED_NAMES = [
    "patch_embed.proj.weight",
    "patch_embed.proj.bias",
    *[f"blocks.{i}.{n}" for i in range(2) for n in SEED_BLOCK],
    "norm.weight",
    "norm.bias",
]
SEED_DECAY = [  # the seed's decay_others for two blocks, in its order
    "patch_embed.proj.weight",
    *[
        f"blocks.{i}.{n}"
        for i in range(2)
        for n in ("attn.qkv.weight", "attn.proj.weight", "mlp.fc1.weight", "mlp.fc2.weight")
    ],
]


def tiny_vit(seed: int = 0, **overrides) -> VisionTransformer:
    torch.manual_seed(seed)
    return VisionTransformer(**{**TINY, **overrides})


def test_image_forward_shapes_with_cls_token():
    model = tiny_vit().eval()
    x = torch.randn(2, 3, 32, 32)
    assert model.forward_features(x).shape == (2, 1 + 16, 32)
    torch.testing.assert_close(model(x), model.forward_features(x)[:, 0])


def test_without_cls_token_forward_pools_the_mean_and_sincos_is_a_buffer():
    model = tiny_vit(use_cls_token=False, pos_embed="sincos").eval()
    x = torch.randn(2, 3, 32, 32)
    tokens = model.forward_features(x)
    assert tokens.shape == (2, 16, 32)
    torch.testing.assert_close(model(x), tokens.mean(dim=1))
    names = dict(model.named_parameters())
    assert "pos_embed" not in names and "cls_token" not in names
    assert "pos_embed" in dict(model.named_buffers())
    assert "pos_embed" not in model.state_dict()  # a function of the grid, not a weight
    # VideoMAE's table: position p, channel 2j -> sin(p / 10000^(2j/D)), 2j+1 -> cos(...).
    p, j = 5, 3
    angle = p / 10000 ** (2 * j / 32)
    assert model.pos_embed[0, p, 2 * j].item() == pytest.approx(torch.tensor(angle).sin().item())
    assert model.pos_embed[0, p, 2 * j + 1].item() == pytest.approx(
        torch.tensor(angle).cos().item(), abs=1e-6
    )


@pytest.mark.parametrize("use_cls_token", [True, False])
def test_video_input_uses_tubelets_under_the_same_names(use_cls_token):
    image = tiny_vit(use_cls_token=use_cls_token)
    video = tiny_vit(use_cls_token=use_cls_token, num_frames=4, tubelet_size=2).eval()
    assert [n for n, _ in video.named_parameters()] == [n for n, _ in image.named_parameters()]
    assert video.patch_embed.proj.weight.shape == (32, 3, 2, 8, 8)
    assert video.grid == (2, 4, 4)
    tokens = video.forward_features(torch.randn(2, 3, 4, 32, 32))
    assert tokens.shape == (2, int(use_cls_token) + 2 * 16, 32)
    with pytest.raises(ConfigError, match="B x C x T x H x W"):
        video(torch.randn(2, 3, 32, 32))


def test_parameter_names_are_seed_002s_listing():
    model = tiny_vit(use_cls_token=False, pos_embed="sincos")
    names = [n for n, _ in model.named_parameters()]
    assert names == SEED_NAMES
    assert [n for n, p in model.named_parameters() if p.dim() > 1] == SEED_DECAY
    learned = [n for n, _ in tiny_vit().named_parameters()]
    assert learned == ["cls_token", "pos_embed", *SEED_NAMES]


def test_attention_has_no_qkv_bias_parameter_and_qkv_bias_false_has_none():
    names = {n for n, _ in tiny_vit().named_parameters()}
    assert "blocks.0.attn.qkv.bias" not in names and "blocks.0.attn.q_bias" in names
    plain = {n for n, _ in tiny_vit(qkv_bias=False).named_parameters()}
    assert not any("q_bias" in n or "v_bias" in n for n in plain)


def test_no_weight_decay_lists_only_parameters():
    assert tiny_vit().no_weight_decay() == {"pos_embed", "cls_token"}
    assert tiny_vit(use_cls_token=False).no_weight_decay() == {"pos_embed"}
    assert tiny_vit(use_cls_token=False, pos_embed="sincos").no_weight_decay() == set()


def test_pos_embed_is_interpolated_for_another_input_size():
    model = tiny_vit().eval()
    resized = model.pos_embed_for((1, 6, 6))
    assert resized.shape == (1, 1 + 36, 32)
    torch.testing.assert_close(resized[:, 0], model.pos_embed[:, 0])  # cls position kept
    assert model.pos_embed_for(model.grid) is model.pos_embed
    with torch.no_grad():  # a constant table stays constant under bicubic interpolation
        model.pos_embed[:, 1:] = 0.5
    torch.testing.assert_close(model.pos_embed_for((1, 6, 6))[:, 1:], torch.full((1, 36, 32), 0.5))
    assert model.forward_features(torch.randn(1, 3, 48, 48)).shape == (1, 37, 32)
    assert model.forward_features(torch.randn(1, 3, 32, 64)).shape == (1, 1 + 32, 32)


def test_state_dict_with_another_grid_loads_resized():
    small = tiny_vit(seed=1)
    big = tiny_vit(seed=2, img_size=48)
    big.load_state_dict(small.state_dict())  # strict: everything fits after resizing
    torch.testing.assert_close(big.pos_embed.detach(), small.pos_embed_for((1, 6, 6)).detach())
    torch.testing.assert_close(big.blocks[1].mlp.fc2.weight, small.blocks[1].mlp.fc2.weight)


def test_checkpointer_round_trip(tmp_path):
    source, target = tiny_vit(seed=1), tiny_vit(seed=2)
    Checkpointer(source, str(tmp_path)).save("model_final")
    report = Checkpointer(target).load(str(tmp_path / "model_final.pth"))
    assert report.missing == [] and report.unexpected == [] and report.fresh == []
    loaded = target.state_dict()
    for name, value in source.state_dict().items():
        torch.testing.assert_close(loaded[name], value, msg=name)


def test_drop_path_is_linear_over_depth_and_identity_in_eval():
    model = tiny_vit(depth=3, drop_path_rate=0.5)
    assert [b.drop_path.p for b in model.blocks] == pytest.approx([0.0, 0.25, 0.5])
    plain = tiny_vit(depth=3)
    plain.load_state_dict(model.state_dict())
    x = torch.randn(4, 3, 32, 32)
    torch.testing.assert_close(model.eval()(x), plain.eval()(x))
    torch.manual_seed(0)
    assert not torch.allclose(model.train()(x), plain(x))


def _timm_style(model: VisionTransformer) -> dict:
    """Returns `model`'s weights as timm names them: qkv.bias with a key part, and a head."""
    state = {}
    for name, value in model.state_dict().items():
        if name.endswith("attn.q_bias"):
            v = model.state_dict()[name.replace("q_bias", "v_bias")]
            k = torch.randn_like(value)
            state[name.replace("q_bias", "qkv.bias")] = torch.cat([value, k, v])
        elif not name.endswith("attn.v_bias"):
            state[name] = value
    state["head.weight"], state["head.bias"] = torch.randn(10, 32), torch.randn(10)
    state["fc_norm.weight"] = torch.ones(32)
    return state


def test_timm_and_mae_style_state_dicts_map_onto_the_model():
    source = tiny_vit(seed=1)
    target = tiny_vit(seed=2)
    report = load_vit_state_dict(target, _timm_style(source))
    assert report.missing == [] and report.unexpected == [] and report.shape_mismatched == []
    for name, value in source.state_dict().items():
        torch.testing.assert_close(target.state_dict()[name], value, msg=name)
    notes = " ".join(report.extra["notes"])
    assert "split 2 attn.qkv.bias" in notes and "head.weight" in notes and "fc_norm" in notes
    # MAE: weights under "model" with an "encoder." prefix; this model pools without a cls
    # token and runs at 48 px, so the cls position is dropped and the grid interpolated.
    pooled = tiny_vit(seed=3, use_cls_token=False, img_size=48)
    mae = {"model": {f"encoder.{k}": v for k, v in _timm_style(source).items()}}
    report = load_vit_state_dict(pooled, mae)
    assert report.missing == [] and report.unexpected == [] and report.shape_mismatched == []
    expected = source.pos_embed_for((1, 6, 6))[:, 1:]
    torch.testing.assert_close(pooled.pos_embed.detach(), expected.detach())
    assert "cls_token" in " ".join(report.extra["notes"])


def test_unmappable_keys_are_reported_not_dropped():
    target = tiny_vit()
    state = {"blocks.0.gamma_1": torch.ones(32), "norm.weight": torch.ones(7)}
    report = load_vit_state_dict(target, state)
    assert report.unexpected == ["blocks.0.gamma_1"]
    assert [k for k, _, _ in report.shape_mismatched] == ["norm.weight"]
    with pytest.raises(ConfigError, match="model.backbone.net"):
        load_vit_state_dict(torch.nn.Linear(2, 2), state)


@pytest.mark.parametrize(
    "name, dim, heads", [("vit_tiny", 192, 3), ("vit_small", 384, 6), ("vit_base", 768, 12)]
)
def test_registered_sizes(name, dim, heads):
    model = build_backbone(name, depth=1, img_size=32, use_cls_token=False)
    assert name in BACKBONES
    assert (model.embed_dim, len(model.blocks), model.blocks[0].attn.num_heads) == (dim, 1, heads)
    assert model.cls_token is None
    with pytest.raises(ConfigError, match="did you mean 'drop_path_rate'"):
        build_backbone(name, depth=1, drop_path=0.1)
    with pytest.raises(ConfigError, match=f"fixes embed_dim={dim}"):
        build_backbone(name, embed_dim=64)


@pytest.mark.parametrize(
    "options, match",
    [
        (dict(img_size=30), "multiple of patch_size"),
        (dict(num_heads=3), "must divide embed_dim"),
        (dict(pos_embed="sin-cos"), "did you mean 'sincos'"),
        (dict(num_frames=3, tubelet_size=2), "tubelet_size=2 must divide num_frames=3"),
        (dict(drop_path_rate=1.0), r"drop_path_rate=1.0 must be in \[0, 1\)"),
        (dict(depth=0), "depth=0 must be a positive integer"),
    ],
)
def test_invalid_options_name_the_option(options, match):
    with pytest.raises(ConfigError, match=match):
        VisionTransformer(**{**TINY, **options})


def test_checkpointer_resizes_pos_embed_from_another_grid(tmp_path):
    from pgtrain.checkpoint import Checkpointer

    small = VisionTransformer(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2)
    big = VisionTransformer(img_size=48, patch_size=8, embed_dim=32, depth=2, num_heads=2)
    torch.save({"model": small.state_dict()}, tmp_path / "small.pth")
    report = Checkpointer(big).load(str(tmp_path / "small.pth"))
    assert report.shape_mismatched == [] and report.fresh == []
    assert big.pos_embed.shape == (1, 1 + 6 * 6, 32)
    torch.testing.assert_close(big.pos_embed[:, :1], small.pos_embed[:, :1])  # cls position kept
    torch.testing.assert_close(big.pos_embed, big.fit_pos_embed(small.pos_embed))
