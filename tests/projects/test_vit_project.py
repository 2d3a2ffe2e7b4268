"""The ViT project: seed-002 parity, the ViTDet plan and training, a short classification run."""

import json
import os

import pytest

from pgtrain.config import LazyConfig, instantiate
from pgtrain.engine import build_run
from pgtrain.solver import build_param_groups_from_config

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
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


def stmixer_reference(model, *, lr, weight_decay, decay, skip=("pos_embed",)):
    """STMixer's own grouping, per parameter: ``{name: (lr, weight_decay)}``.

    `get_parameter_groups(model.backbone, ...)`: layer ids over the backbone only (embeddings 0,
    ``blocks.i`` i + 1, the rest depth + 1; scale ``decay ** (depth + 1 - id)``, or 1 without
    layer decay), no weight decay for 1-D parameters, biases and the skip list; then
    `rest_parameters`: every parameter whose name lacks "backbone", at the optimizer's own LR
    and weight decay.
    """
    backbone = model.backbone
    depth = len(backbone.blocks)

    def layer_id(name):
        if name in ("cls_token", "mask_token", "pos_embed") or name.startswith("patch_embed"):
            return 0
        if name.startswith("blocks."):
            return int(name.split(".")[1]) + 1
        return depth + 1

    out = {}
    for name, p in backbone.named_parameters():
        no_decay = p.ndim == 1 or name.endswith(".bias") or name in skip
        scale = decay ** (depth + 1 - layer_id(name)) if decay < 1 else 1.0
        out[f"backbone.{name}"] = (lr * scale, 0.0 if no_decay else weight_decay)
    for name, _ in model.named_parameters():
        if "backbone" not in name:
            out[name] = (lr, weight_decay)
    return out


def per_parameter(groups):
    return {p["name"]: (g["lr"], g["weight_decay"]) for g in groups for p in g["params"]}


def test_stmixer_grouping_reproduced_parameter_by_parameter(tmp_path, run_tool):
    # Observed: the config read STMixer's `encoder.` groups as the model-level encoder; STMixer
    # groups the backbone only, and everything else is one rest group at the optimizer's values.
    out = tmp_path / "groups.json"
    proc = run_tool(
        "inspect_param_groups.py",
        "--config",
        "projects/vit/stmixer_config.py",
        "--verbose",
        "--json",
        str(out),
    )
    report = json.loads(out.read_text())
    cfg = LazyConfig.load(os.path.join(ROOT, "projects", "vit", "stmixer_config.py"))
    expected = stmixer_reference(instantiate(cfg.model), lr=1e-4, weight_decay=1e-4, decay=0.75)
    got = per_parameter(report["groups"])
    assert list(got) == list(expected) or sorted(got) == sorted(expected)
    for name, (lr, wd) in expected.items():
        assert got[name][0] == pytest.approx(lr, rel=1e-12), name
        assert got[name][1] == wd, name
    rest = [g for g in report["groups"] if not g["params"][0]["name"].startswith("backbone.")]
    assert [g["name"] for g in rest] == ["rest"]
    assert [p["name"] for p in rest[0]["params"]] == [
        n for n in expected if not n.startswith("backbone.")
    ]
    # The names STMixer prints (its listing elides some) keep their decay / no-decay split.
    for name in SEED_DECAY:
        assert got[f"backbone.{name}"][1] == 1e-4, name
    for name in SEED_NO_DECAY_TAIL:
        assert got[f"backbone.{name}"][1] == 0.0, name
    assert "- backbone.blocks.11.attn.v_bias" in proc.stdout  # the verbose listing
    assert "skip names that are no parameter of this model (ignored): pos_embed" in proc.stdout


def test_stmixer_without_layer_decay_is_the_vmaev2_vitb_grouping():
    cfg = LazyConfig.load(os.path.join(ROOT, "projects", "vit", "stmixer_config.py"))
    LazyConfig.apply_overrides(
        cfg,
        ["optimizer.params.decay=1.0", "model.backbone.name=vit_tiny", "+model.backbone.depth=2"],
    )
    run = build_run(cfg, device="cpu")
    expected = stmixer_reference(run.model, lr=1e-4, weight_decay=1e-4, decay=1.0)
    got = {n: (g["lr"], g["weight_decay"]) for g in run.groups for n in g["param_names"]}
    assert got == expected


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
    assert len(losses) == 3
    # Every group of the run-start table has its LR logged, at 10x for the predictors' groups.
    first = next(r for r in records if any(k.startswith("lr/") for k in r))
    lrs = {k[3:]: v for k, v in first.items() if k.startswith("lr/")}
    predictors = [v for k, v in lrs.items() if "predictors" in k]
    last_layer = [v for k, v in lrs.items() if k.startswith("layer_3")]  # depth 2: scale 1
    assert predictors and last_layer
    assert max(predictors) == pytest.approx(10 * max(last_layer))
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
