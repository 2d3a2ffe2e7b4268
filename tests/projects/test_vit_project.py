"""The ViT project: seed-002 parity, the ViTDet plan and training, a short classification run."""

import json
import os

import pytest

from pgtrain.config import LazyConfig, instantiate
from pgtrain.solver import build_param_groups_from_config

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BLOCK_DECAY = ["attn.qkv.weight", "attn.proj.weight", "mlp.fc1.weight", "mlp.fc2.weight"]
BLOCK_NO_DECAY = [
    "norm1.weight",
    "norm1.bias",
    "attn.q_bias",
    "attn.v_bias",
    "attn.proj.bias",
    "norm2.weight",
    "norm2.bias",
    "mlp.fc1.bias",
    "mlp.fc2.bias",
]
# The names seed 002 prints (its listing elides some), in its order.
SEED_DECAY = [
    "patch_embed.proj.weight",
    "blocks.0.attn.qkv.weight",
    "blocks.0.attn.proj.weight",
    "blocks.0.mlp.fc1.weight",
    "blocks.0.mlp.fc2.weight",
    "blocks.1.attn.qkv.weight",
    "blocks.1.attn.proj.weight",
    "blocks.1.mlp.fc1.weight",
    "blocks.11.mlp.fc1.weight",
    "blocks.11.mlp.fc2.weight",
]
SEED_NO_DECAY_TAIL = [
    "blocks.11.mlp.fc1.bias",
    "blocks.11.mlp.fc2.bias",
    "norm.weight",
    "norm.bias",
]


def backbone_groups(report):
    """{group: [parameter names relative to the backbone]} for the backbone's parameters."""
    out = {}
    for group in report["groups"]:
        names = [
            p["name"][len("backbone.") :]
            for p in group["params"]
            if p["name"].startswith("backbone.")
        ]
        if names:
            out[group["name"]] = names
    return out


def is_subsequence(short, long):
    it = iter(long)
    return all(name in it for name in short)


def test_seed_002_listing_reproduced_name_by_name(tmp_path, run_tool):
    out = tmp_path / "groups.json"
    proc = run_tool(
        "inspect_param_groups.py",
        "--config",
        "projects/vit/stmixer_config.py",
        "--verbose",
        "--json",
        str(out),
    )
    groups = backbone_groups(json.loads(out.read_text()))
    decay = ["patch_embed.proj.weight"] + [
        f"blocks.{i}.{n}" for i in range(12) for n in BLOCK_DECAY
    ]
    no_decay = (
        ["patch_embed.proj.bias"]
        + [f"blocks.{i}.{n}" for i in range(12) for n in BLOCK_NO_DECAY]
        + ["norm.weight", "norm.bias"]
    )
    assert groups == {"decay_others": decay, "no_decay_others": no_decay}
    assert is_subsequence(SEED_DECAY, decay) and no_decay[-4:] == SEED_NO_DECAY_TAIL
    report = json.loads(out.read_text())
    hparams = {g["name"]: (g["weight_decay"], g["lr_scale"]) for g in report["groups"]}
    assert hparams == {
        "decay_others": (1e-4, 1.0),
        "no_decay_others": (0.0, 1.0),
        "decay_encoder": (1e-4, 1.0),
        "no_decay_encoder": (0.0, 1.0),
    }
    assert "- backbone.blocks.11.attn.v_bias" in proc.stdout  # the verbose listing


def test_seed_002_layer_decay_075_splits_per_layer_with_the_formula(tmp_path):
    cfg = LazyConfig.load(os.path.join(ROOT, "projects", "vit", "stmixer_config.py"))
    LazyConfig.apply_overrides(
        cfg, ["optimizer.params.builder=layer_decay", "+optimizer.params.decay=0.75"]
    )
    model = instantiate(cfg.model)
    groups = build_param_groups_from_config(cfg.optimizer, model)
    lr = {n: g["lr"] for g in groups for n in g["param_names"]}

    def layer(name):
        if name.startswith("backbone.patch_embed"):
            return 0
        if name.startswith("backbone.blocks."):
            return int(name.split(".")[2]) + 1
        return 13

    for name, value in lr.items():
        assert value == pytest.approx(1e-4 * 0.75 ** (13 - layer(name))), name
    assert len({g["name"] for g in groups}) >= 2 * 14  # decay / no-decay per layer


def test_vitdet_plan_multiplies_layer_decay_and_head_multiplier():
    cfg = LazyConfig.load(os.path.join(ROOT, "projects", "vit", "vitdet_config.py"))
    LazyConfig.apply_overrides(
        cfg, ["model.backbone.embed_dim=32", "model.backbone.depth=2", "model.backbone.num_heads=2"]
    )
    model = instantiate(cfg.model)
    groups = build_param_groups_from_config(cfg.optimizer, model)
    lr = {n: g["lr"] for g in groups for n in g["param_names"]}
    base = cfg.optimizer.lr
    assert lr["roi_heads.box_predictor.cls_score.weight"] == pytest.approx(10 * base)
    assert lr["roi_heads.mask_predictor.mask_fcn_logits.weight"] == pytest.approx(10 * base)
    assert lr["backbone.net.blocks.0.mlp.fc1.weight"] == pytest.approx(base * 0.75**2)
    assert lr["backbone.net.patch_embed.proj.weight"] == pytest.approx(base * 0.75**3)
    assert lr["rpn.head.cls_logits.weight"] == pytest.approx(base)


@pytest.mark.slow
def test_vitdet_trains_a_few_iterations_on_shapes(tmp_path, run_tool):
    out = tmp_path / "vitdet"
    run_tool(
        "train_net.py",
        "--config",
        "projects/vit/vitdet_config.py",
        f"train.output_dir={out}",
        f"shapes.root={tmp_path / 'data'}",
        "shapes.num_train=8",
        "shapes.num_val=4",
        "shapes.image_size=128",
        "model.min_size=128",
        "model.max_size=128",
        "dataloader.train.dataset.transforms.min_size=[128]",
        "dataloader.train.dataset.transforms.max_size=128",
        "dataloader.train.total_batch_size=2",
        "model.backbone.embed_dim=32",
        "model.backbone.depth=2",
        "model.backbone.num_heads=2",
        "train.max_iter=3",
        "train.eval_period=3",
        "train.log_period=1",
    )
    records = [json.loads(line) for line in (out / "metrics.json").read_text().splitlines()]
    losses = [r["total_loss"] for r in records if "total_loss" in r]
    assert len(losses) == 3 and all(v is not None for v in losses)
    assert any("segm/AP" in r for r in records)
    log = (out / "log.txt").read_text()
    assert "predictors" in log and "layer_0" in log  # both effects in the group table


@pytest.mark.slow
def test_short_fine_tune_beats_chance(tmp_path, run_tool):
    """Pre-train briefly on digits 0-5, fine-tune on 6-9 with a new head: well above chance."""
    pre, ft = tmp_path / "pre", tmp_path / "ft"
    tiny = ["model.backbone.depth=2", "optimizer.lr=1e-3", "train.checkpoint.period=1000"]
    run_tool(
        "train_net.py",
        "--config",
        "projects/vit/pretrain_config.py",
        f"train.output_dir={pre}",
        "train.max_iter=50",
        "train.eval_period=50",
        *tiny,
    )
    run_tool(
        "train_net.py",
        "--config",
        "projects/vit/config.py",
        f"train.output_dir={ft}",
        f"train.init_checkpoint={pre}/model_final.pth",
        "train.max_iter=120",
        "train.eval_period=120",
        *tiny,
    )
    assert "head.weight" in (ft / "log.txt").read_text()  # the 6-class head skipped: fresh
    records = [json.loads(line) for line in (ft / "metrics.json").read_text().splitlines()]
    top1 = [r["top1"] for r in records if "top1" in r]
    assert top1 and top1[-1] > 50.0  # 4 classes: chance is 25%, so twice chance at least
