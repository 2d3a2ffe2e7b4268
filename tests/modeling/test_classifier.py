"""ImageClassifier with a stand-in backbone; the ViT project config when the ViT exists."""

import os

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from pgtrain.errors import ConfigError, PgtrainError
from pgtrain.modeling.classifier import ImageClassifier
from pgtrain.param_groups import build_param_groups

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class PooledBackbone(nn.Module):
    """A stand-in for a ViT: a tiny ViT-named trunk (pos_embed, blocks, norm) returning B×D."""

    def __init__(self, embed_dim: int = 8, depth: int = 2, with_embed_dim: bool = True) -> None:
        super().__init__()
        if with_embed_dim:
            self.embed_dim = embed_dim
        self.patch_embed = nn.Linear(3, embed_dim)
        self.pos_embed = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.blocks = nn.ModuleList(nn.Linear(embed_dim, embed_dim) for _ in range(depth))
        self.norm = nn.LayerNorm(embed_dim)

    def no_weight_decay(self) -> set[str]:
        return {"pos_embed"}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x.mean(dim=(2, 3)))[:, None] + self.pos_embed
        for block in self.blocks:
            x = x + block(x)
        return self.norm(x)[:, 0]


def make(**options) -> ImageClassifier:
    torch.manual_seed(0)
    return ImageClassifier(backbone=PooledBackbone(), num_classes=3, **options)


def batch(size: int = 4) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return {
        "image": torch.randn(size, 3, 8, 8, generator=g),
        "label": torch.arange(size) % 3,
    }


def test_eval_returns_the_heads_logits_of_the_backbone_features():
    model = make().eval()
    data = batch()
    logits = model(data)
    assert logits.shape == (4, 3)
    expected = model.head(model.backbone(data["image"]))
    torch.testing.assert_close(logits, expected)


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_training_returns_the_cross_entropy_and_trains_the_backbone(smoothing):
    model = make(label_smoothing=smoothing).train()
    data = batch()
    losses = model(data)
    assert set(losses) == {"loss_cls"}
    logits = model.head(model.backbone(data["image"]))
    expected = F.cross_entropy(logits, data["label"], label_smoothing=smoothing)
    torch.testing.assert_close(losses["loss_cls"], expected)
    losses["loss_cls"].backward()
    assert model.backbone.blocks[0].weight.grad.abs().sum() > 0


def test_head_is_named_head_and_sized_from_embed_dim_or_feature_dim():
    shapes = {n: tuple(p.shape) for n, p in make().named_parameters()}
    assert shapes["head.weight"] == (3, 8) and shapes["head.bias"] == (3,)
    model = ImageClassifier(
        backbone=PooledBackbone(embed_dim=6, with_embed_dim=False), num_classes=2, feature_dim=6
    )
    assert model.head.weight.shape == (2, 6)
    with pytest.raises(ConfigError, match="feature_dim"):
        ImageClassifier(backbone=PooledBackbone(with_embed_dim=False), num_classes=2)


def test_head_dropout_acts_in_training_only():
    model = make(head_dropout=0.5)
    data = batch(16)
    model.eval()
    torch.testing.assert_close(model(data), model(data))
    model.train()
    torch.manual_seed(0)
    first = model(data)["loss_cls"]
    torch.manual_seed(1)
    assert not torch.equal(first, model(data)["loss_cls"])


@pytest.mark.parametrize(
    "options, key",
    [
        (dict(num_classes=0), "num_classes"),
        (dict(label_smoothing=1.0), "label_smoothing"),
        (dict(head_dropout=-0.1), "head_dropout"),
    ],
)
def test_bad_options_are_config_errors_naming_the_key(options, key):
    with pytest.raises(ConfigError, match=key):
        ImageClassifier(backbone=PooledBackbone(), **{"num_classes": 3, **options})


def test_labels_outside_num_classes_and_bad_batches_are_reported():
    model = make().train()
    with pytest.raises(ConfigError, match="model.num_classes"):
        model({"image": torch.randn(2, 3, 8, 8), "label": torch.tensor([0, 3])})
    with pytest.raises(PgtrainError, match="'image'"):
        model({"img": torch.randn(2, 3, 8, 8)})


def test_layer_decay_with_a_head_multiplier_sees_the_backbone_under_its_prefix():
    model = make()
    groups = build_param_groups(
        model,
        builder="layer_decay",
        lr=1.0,
        weight_decay=0.05,
        decay=0.5,
        rules=[dict(match="head.*", lr_mult=10.0, group="head")],
    )
    by_name = {n: g for g in groups for n in g["param_names"]}
    # Two blocks: embeddings 0.5 ** 3, blocks.0 0.5 ** 2, blocks.1 0.5, norm and head 1 (x 10).
    assert by_name["backbone.pos_embed"]["lr"] == pytest.approx(0.125)
    assert by_name["backbone.blocks.0.weight"]["lr"] == pytest.approx(0.25)
    assert by_name["backbone.norm.weight"]["lr"] == pytest.approx(1.0)
    assert by_name["head.weight"]["lr"] == pytest.approx(10.0)
    assert by_name["head.weight"]["name"].startswith("head")
    assert by_name["backbone.pos_embed"]["weight_decay"] == 0.0  # the no_weight_decay() hint
    assert by_name["head.bias"]["weight_decay"] == 0.0
    assert by_name["backbone.blocks.1.weight"]["weight_decay"] == pytest.approx(0.05)


def _load_vit_config(*overrides: str):
    pytest.importorskip("pgtrain.modeling.vit", reason="the ViT backbone is not written yet")
    pytest.importorskip("sklearn", reason="the digits ship with scikit-learn")
    from pgtrain.config import LazyConfig

    cfg = LazyConfig.load(os.path.join(ROOT, "projects", "vit", "config.py"))
    return LazyConfig.apply_overrides(cfg, list(overrides))


def test_vit_project_config_round_trips_and_builds_its_param_groups(tmp_path):
    from pgtrain.config import LazyConfig, instantiate
    from pgtrain.solver import build_param_groups_from_config

    cfg = _load_vit_config("model.backbone.depth=2")
    LazyConfig.save(cfg, str(tmp_path / "config.yaml"))
    cfg = LazyConfig.load(str(tmp_path / "config.yaml"))
    torch.manual_seed(0)
    model = instantiate(cfg.model, "model")
    data = next(iter(instantiate(cfg.dataloader.test, "dataloader.test")))
    model.eval()
    assert model(data).shape == (len(data["label"]), 4)
    groups = build_param_groups_from_config(cfg.optimizer, model)
    by_name = {n: g for g in groups for n in g["param_names"]}
    base = cfg.optimizer.lr
    assert by_name["head.weight"]["lr"] == pytest.approx(10 * base)
    assert by_name["backbone.blocks.0.attn.proj.weight"]["lr"] == pytest.approx(base * 0.75**2)
    assert by_name["backbone.blocks.1.mlp.fc1.weight"]["weight_decay"] == pytest.approx(0.05)
    for name in ("backbone.pos_embed", "backbone.cls_token", "backbone.norm.weight", "head.bias"):
        assert by_name[name]["weight_decay"] == 0.0, name
