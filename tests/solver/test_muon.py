"""Muon + AdamW: the `muon` builder's routes (checked by hand on a ViT, a ResNet and the Mask
R-CNN), FlatMuon on conv filters, and MuonAdamW behaving as one torch optimizer (steps, LR
schedule, name-keyed state, a resume that moves a parameter between the algorithms)."""

import pytest
import torch
import torchvision
from torch import nn

from pgtrain.config import LazyConfig, instantiate
from pgtrain.errors import ConfigError
from pgtrain.modeling import ImageClassifier, build_backbone
from pgtrain.param_groups import (
    build_param_groups,
    collect_model_params,
    format_param_group_table,
    load_optimizer_state_by_name,
    muon_routes,
    optimizer_state_by_name,
)
from pgtrain.param_groups.builders.muon import CONV, MATRIX, NO_WEIGHT_DECAY, ONE_D, OUTPUT_LAYER
from pgtrain.solver import FlatMuon, LRMultiplier, MuonAdamW, build_optimizer, build_schedule

STEM = ("adamw", "adamw: stem", "adamw: the stem (the model's first conv or linear layer)")

CLASSIFIER = "adamw: the classifier (the last linear layer in the model's '{}')"


def routes(model):
    params = collect_model_params(model)
    return dict(zip(params.names, muon_routes(params), strict=True))


def vit():
    torch.manual_seed(0)
    backbone = build_backbone(name="vit_tiny", img_size=16, patch_size=4, depth=1)
    return ImageClassifier(backbone=backbone, num_classes=3)


def test_vit_routes():
    got = routes(vit())
    muon = sorted(n for n, r in got.items() if r.optimizer == "muon")
    assert muon == [
        "backbone.blocks.0.attn.proj.weight",
        "backbone.blocks.0.attn.qkv.weight",
        "backbone.blocks.0.mlp.fc1.weight",
        "backbone.blocks.0.mlp.fc2.weight",
    ]
    assert got["backbone.patch_embed.proj.weight"] == STEM
    # pgtrain's ViT lists its position table and class token in no_weight_decay().
    assert got["backbone.pos_embed"] == NO_WEIGHT_DECAY
    assert got["backbone.cls_token"] == NO_WEIGHT_DECAY
    assert got["backbone.blocks.0.norm1.weight"] == ONE_D
    assert got["head.weight"].why == CLASSIFIER.format("head")


def test_resnet_routes():
    got = routes(torchvision.models.resnet18(num_classes=10))
    assert got["conv1.weight"] == STEM
    assert got["layer1.0.conv1.weight"] == CONV
    assert got["layer2.0.downsample.0.weight"] == CONV  # a 1x1 conv
    assert got["layer1.0.bn1.weight"] == ONE_D
    assert got["fc.weight"].why == CLASSIFIER.format("fc")
    modules = torchvision.models.resnet18().modules()
    convs = [m for m in modules if isinstance(m, nn.Conv2d)]
    # Every conv but the stem.
    assert sum(r.optimizer == "muon" for r in got.values()) == len(convs) - 1


def test_mask_rcnn_routes():
    from tests.projects.test_maskrcnn_project import TINY

    cfg = LazyConfig.apply_overrides(LazyConfig.load("projects/maskrcnn/config.py"), TINY)
    model = instantiate(cfg.model)
    params = dict(model.named_parameters())
    got = {n: r for n, r in routes(model).items() if params[n].requires_grad}
    outputs = [
        "roi_heads.box_predictor.cls_score.weight",
        "roi_heads.box_predictor.bbox_pred.weight",
        "roi_heads.mask_predictor.mask_fcn_logits.weight",
        "rpn.head.cls_logits.weight",
        "rpn.head.bbox_pred.weight",
    ]
    for name in outputs:
        assert got[name] == OUTPUT_LAYER, name
    assert got["roi_heads.box_head.fc6.weight"] == MATRIX
    assert got["roi_heads.box_head.fc7.weight"] == MATRIX
    assert got["rpn.head.conv.0.0.weight"] == CONV
    every = routes(model)  # the stem is frozen here, but still the stem
    first_conv = next(n for n in every if params[n].ndim == 4)
    assert [n for n, r in every.items() if r == STEM] == [first_conv]


def test_the_table_and_explain_show_the_route_and_why():
    model = vit()
    groups = build_param_groups(model, builder="muon", lr=1e-3, weight_decay=0.1)
    names = [g["name"] for g in groups]
    assert "muon" in names and any(n.startswith("adamw") for n in names)
    assert all(g["optimizer"] == g["name"].split("[")[0] for g in groups)
    table = format_param_group_table(groups, model)
    assert "routes: 4 tensors to Muon" in table
    explained = groups.explain("backbone.pos_embed")
    assert "by adamw: a lookup table (no_weight_decay())" in explained
    # A rule moves a matrix to AdamW; its group follows.
    moved = build_param_groups(
        model,
        builder="muon",
        lr=1e-3,
        weight_decay=0.1,
        rules=[dict(match="*.qkv.weight", optimizer="adamw")],
    )
    group = next(g for g in moved if "backbone.blocks.0.attn.qkv.weight" in g["param_names"])
    assert group["optimizer"] == "adamw" and group["name"].startswith("adamw")


def test_a_plain_optimizer_with_routed_groups_is_an_error():
    cfg = LazyConfig.apply_overrides(
        LazyConfig.load("projects/vit/config.py"),
        ["model.backbone.depth=1", "optimizer.params.builder=muon", "~optimizer.params.decay"],
    )
    model = instantiate(cfg.model)
    with pytest.raises(ConfigError, match="which AdamW would ignore; use pgtrain.solver.MuonAdamW"):
        build_optimizer(cfg.optimizer, model)


def test_flat_muon_updates_a_conv_filter_as_its_matrix():
    torch.manual_seed(0)
    conv = nn.Parameter(torch.randn(4, 3, 3, 3))
    matrix = nn.Parameter(conv.detach().reshape(4, 27).clone())
    flat = FlatMuon([conv], lr=0.02, adjust_lr_fn="match_rms_adamw")
    plain = torch.optim.Muon([matrix], lr=0.02, adjust_lr_fn="match_rms_adamw")
    for _ in range(3):
        grad = torch.randn(4, 3, 3, 3)
        conv.grad, matrix.grad = grad.clone(), grad.reshape(4, 27).clone()
        flat.step()
        plain.step()
    assert conv.shape == (4, 3, 3, 3)
    torch.testing.assert_close(conv.detach().reshape(4, 27), matrix.detach(), rtol=0, atol=1e-6)
    assert flat.state[conv]["momentum_buffer"].shape == conv.shape
    with pytest.raises(ConfigError, match="route it to AdamW"):
        FlatMuon([nn.Parameter(torch.zeros(3))])


def test_muon_adamw_is_one_optimizer_that_steps_both_parts():
    model = vit()
    reference = vit()
    groups = build_param_groups(model, builder="muon", lr=1e-3, weight_decay=0.1)
    hybrid = MuonAdamW(groups, lr=1e-3, weight_decay=0.1)
    assert hybrid.param_groups == list(groups)
    assert set(hybrid.parts) == {"muon", "adamw"}
    for part in hybrid.parts.values():  # the parts hold this optimizer's own group dicts
        assert all(any(g is h for h in hybrid.param_groups) for g in part.param_groups)
    # The same updates by hand: torch's Muon on the routed matrices, AdamW on the rest.
    ref = dict(reference.named_parameters())
    by_hand = []
    for g in groups:
        params = [ref[n] for n in g["param_names"]]
        kwargs = dict(lr=g["lr"], weight_decay=g["weight_decay"])
        if g["optimizer"] == "muon":
            by_hand.append(torch.optim.Muon(params, adjust_lr_fn="match_rms_adamw", **kwargs))
        else:
            by_hand.append(torch.optim.AdamW(params, betas=(0.9, 0.95), **kwargs))
    x = torch.randn(2, 3, 16, 16)
    for _ in range(3):
        for m, opts in ((model, [hybrid]), (reference, by_hand)):
            for o in opts:
                o.zero_grad()
            m.backbone(x).sum().backward()
            for o in opts:
                o.step()
    for name, p in model.named_parameters():
        torch.testing.assert_close(p, ref[name], rtol=0, atol=1e-6, msg=name)


def test_the_schedule_reaches_both_parts_with_the_ratios_kept():
    model = vit()
    groups = build_param_groups(
        model, builder="muon", lr=1e-3, weight_decay=0.1, rules=[dict(match="head.*", lr_mult=10)]
    )
    hybrid = MuonAdamW(groups)
    scheduler = LRMultiplier(hybrid, build_schedule(name="cosine", warmup_length=0.5), 10)
    for _ in range(3):  # inside the warmup
        hybrid.step()
        scheduler.step()
        ratios = {round(g["lr"] / g["initial_lr"], 12) for g in hybrid.param_groups}
        assert len(ratios) == 1  # every group, either part, at the same point of the schedule
        for part in hybrid.parts.values():
            for g in part.param_groups:
                assert g["lr"] == next(h for h in hybrid.param_groups if h is g)["lr"]
    head = next(g for g in hybrid.param_groups if "head.weight" in g["param_names"])
    muon = next(g for g in hybrid.param_groups if g["optimizer"] == "muon")
    assert head["lr"] == pytest.approx(10 * muon["lr"])


def test_name_keyed_state_round_trips_and_a_reroute_starts_that_state_fresh():
    model = vit()
    hybrid = MuonAdamW(build_param_groups(model, builder="muon", lr=1e-3, weight_decay=0.1))
    model.backbone(torch.randn(2, 3, 16, 16)).sum().backward()
    hybrid.step()
    saved = optimizer_state_by_name(hybrid, model)
    assert "momentum_buffer" in saved["state"]["backbone.blocks.0.attn.qkv.weight"]
    assert "exp_avg" in saved["state"]["backbone.pos_embed"]
    # Same grouping: every state comes back to its part.
    again = MuonAdamW(build_param_groups(model, builder="muon", lr=1e-3, weight_decay=0.1))
    report = load_optimizer_state_by_name(again, saved, model)
    qkv = dict(model.named_parameters())["backbone.blocks.0.attn.qkv.weight"]
    assert torch.equal(
        again.parts["muon"].state[qkv]["momentum_buffer"],
        hybrid.parts["muon"].state[qkv]["momentum_buffer"],
    )
    assert not report.rerouted
    # Regrouped: qkv now on AdamW, whose state a Muon momentum is not: it starts fresh.
    moved = MuonAdamW(
        build_param_groups(
            model,
            builder="muon",
            lr=1e-3,
            weight_decay=0.1,
            rules=[dict(match="*.qkv.weight", optimizer="adamw")],
        )
    )
    report = load_optimizer_state_by_name(moved, saved, model)
    assert [r[0] for r in report.rerouted] == ["backbone.blocks.0.attn.qkv.weight"]
    assert qkv not in moved.parts["adamw"].state
    assert "proj.weight" in " ".join(n for n in report.restored)
    model.backbone(torch.randn(2, 3, 16, 16)).sum().backward()
    moved.step()  # AdamW creates qkv's state anew
    assert "exp_avg" in moved.parts["adamw"].state[qkv]


def test_train_net_trains_and_resumes_regrouped_with_muon_adamw(tmp_path, caplog):
    import logging

    from tools import train_net

    def cfg(*extra):
        return LazyConfig.apply_overrides(
            LazyConfig.load("projects/vit/muon_config.py"),
            [
                "model.backbone.depth=1",
                "train.eval_period=0",
                "train.checkpoint.period=4",
                "train.log_period=1",
                f"train.output_dir={tmp_path}",
                *extra,
            ],
        )

    train_net.do_train(cfg("train.max_iter=4"), resume=False)
    moved = "optimizer.params.rules=[{match: 'head.*', lr_mult: 10.0, group: head}, " + (
        "{match: '*.qkv.weight', optimizer: adamw}]"
    )
    with caplog.at_level(logging.INFO, logger="pgtrain"):
        train_net.do_train(cfg("train.max_iter=6", moved), resume=True)
    assert "now updated by adamw, not muon: state starts fresh: backbone.blocks.0.attn.qkv" in (
        caplog.text
    )
    rows = [line for line in (tmp_path / "metrics.json").read_text().splitlines() if "loss" in line]
    assert len(rows) == 6 and "lr/muon" in rows[-1] and "lr/head[wd=0.05]" in rows[-1]


@pytest.mark.parametrize(
    "builder, options",
    [("default", {}), ("layer_decay", {"decay": 0.75}), ("rules", {})],
)
def test_a_hybrid_over_groups_that_route_nothing_to_muon_is_an_error(builder, options):
    """Groups from a builder that does not route leave Muon empty: that would train plain AdamW
    under the name Muon, so it is refused, saying what to use."""
    groups = build_param_groups(vit(), builder=builder, lr=1e-3, weight_decay=0.1, **options)
    with pytest.raises(ConfigError) as e:
        MuonAdamW(groups)
    message = str(e.value)
    assert "\n" not in message
    assert "MuonAdamW: no parameter is routed to 'muon'" in message
    assert f"builder '{builder}'" in message
    assert "optimizer.params.builder=muon" in message and "optimizer='muon'" in message


def test_a_hybrid_with_nothing_on_adamw_is_an_error_too():
    model = nn.Sequential(nn.Linear(8, 8, bias=False), nn.Linear(8, 8, bias=False))
    groups = build_param_groups(
        model, builder="rules", lr=1e-3, rules=[dict(match="*", optimizer="muon")]
    )
    with pytest.raises(ConfigError, match="no parameter is routed to 'adamw'"):
        MuonAdamW(groups)


def _stepped_hybrid(steps, seed=0):
    """A ViT, its MuonAdamW and cosine schedule, after `steps` steps on fixed inputs."""
    model = vit()
    hybrid = MuonAdamW(build_param_groups(model, builder="muon", lr=1e-3, weight_decay=0.1))
    scheduler = LRMultiplier(hybrid, build_schedule(name="cosine", warmup_length=0.25), 8)
    _train(model, hybrid, scheduler, range(steps))
    return model, hybrid, scheduler


def _train(model, optimizer, scheduler, steps):
    for step in steps:
        optimizer.zero_grad()
        x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(step))
        model.backbone(x).square().sum().backward()
        optimizer.step()
        scheduler.step()


def test_torch_style_load_state_dict_continues_bit_exactly():
    """`load_state_dict(state_dict())` on a fresh MuonAdamW: both algorithms' state and every
    group's hyperparameters come back, the parts keep sharing the groups the scheduler writes,
    and the next steps equal those of an unbroken optimizer."""
    unbroken_model, unbroken, unbroken_scheduler = _stepped_hybrid(4)
    model, hybrid, scheduler = _stepped_hybrid(2)
    saved = {"optimizer": hybrid.state_dict(), "scheduler": scheduler.state_dict()}
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    model = vit()
    model.load_state_dict(weights)
    fresh = MuonAdamW(build_param_groups(model, builder="muon", lr=1e-3, weight_decay=0.1))
    fresh_scheduler = LRMultiplier(fresh, build_schedule(name="cosine", warmup_length=0.25), 8)
    fresh.load_state_dict(saved["optimizer"])
    fresh_scheduler.load_state_dict(saved["scheduler"])
    for group, old in zip(fresh.param_groups, hybrid.param_groups, strict=True):
        assert group["lr"] == old["lr"] and group["initial_lr"] == old["initial_lr"]
    for part in fresh.parts.values():  # the parts still hold the groups the scheduler writes
        assert all(any(g is h for h in fresh.param_groups) for g in part.param_groups)
    qkv = dict(model.named_parameters())["backbone.blocks.0.attn.qkv.weight"]
    pos = dict(model.named_parameters())["backbone.pos_embed"]
    assert "momentum_buffer" in fresh.parts["muon"].state[qkv]
    assert "exp_avg" in fresh.parts["adamw"].state[pos]
    _train(model, fresh, fresh_scheduler, range(2, 4))
    for name, p in unbroken_model.named_parameters():
        assert torch.equal(dict(model.named_parameters())[name], p), name
    assert [g["lr"] for g in fresh.param_groups] == [g["lr"] for g in unbroken.param_groups]


def test_load_state_dict_refuses_a_plain_optimizers_or_a_rerouted_state():
    model, hybrid, _ = _stepped_hybrid(1)
    plain = torch.optim.AdamW([{"params": g["params"]} for g in hybrid.param_groups])
    with pytest.raises(ConfigError, match="was not saved by a hybrid optimizer"):
        MuonAdamW(build_param_groups(model, builder="muon", lr=1e-3)).load_state_dict(
            plain.state_dict()
        )
    saved = hybrid.state_dict()
    for group in saved["param_groups"]:  # as if saved with the routes swapped
        group["optimizer"] = {"muon": "adamw", "adamw": "muon"}[group["optimizer"]]
    with pytest.raises(ConfigError, match="load_optimizer_state_by_name"):
        MuonAdamW(build_param_groups(model, builder="muon", lr=1e-3)).load_state_dict(saved)


@pytest.mark.slow
def test_train_net_refuses_a_muon_config_whose_grouping_routes_nothing(tmp_path):
    from tests._cli_batch import run_batch

    config = ["--config", "projects/vit/muon_config.py", f"train.output_dir={tmp_path}"]
    config += ["train.max_iter=2", "train.eval_period=0", "model.backbone.depth=1"]
    (result,) = run_batch(
        "tools/train_net.py", [[*config, "optimizer.params.builder=default"]], tmp_path
    )
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    line = [ln for ln in result.stderr.splitlines() if ln.strip()][-1]
    assert line.startswith("error: ") and "no parameter is routed to 'muon'" in line
    assert "builder 'default'" in line and "optimizer.params.builder=muon" in line
