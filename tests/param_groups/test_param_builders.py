"""Builders: each registered one, exact groups on Mask R-CNN and a ViT, custom and config use."""

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from pgtrain.config import LazyCall, instantiate
from pgtrain.errors import ConfigError
from pgtrain.param_groups import (
    PARAM_GROUP_BUILDERS,
    ParamGroups,
    build_param_groups,
    plan_param_groups,
)
from pgtrain.param_groups.model_params import collect_model_params


def by_name(groups):
    """Maps each parameter name to its group dict."""
    return {n: g for g in groups for n in g["param_names"]}


@pytest.mark.parametrize("builder", PARAM_GROUP_BUILDERS.names())
def test_every_builder_places_each_trainable_parameter_once(builder, detector):
    groups = build_param_groups(detector, builder=builder, lr=0.1, weight_decay=1e-4)
    assert isinstance(groups, ParamGroups)
    names = [n for g in groups for n in g["param_names"]]
    assert sorted(names) == sorted(n for n, _ in detector.named_parameters())
    assert len({g["name"] for g in groups}) == len(groups)
    for group in groups:
        assert [id(p) for p in group["params"]] == [
            id(dict(detector.named_parameters())[n]) for n in group["param_names"]
        ]
        assert group["lr"] == pytest.approx(0.1 * group["lr_scale"])
    for optimizer in (torch.optim.SGD(groups, lr=0.1, momentum=0.9), torch.optim.AdamW(groups)):
        assert [g["lr"] for g in optimizer.param_groups] == [g["lr"] for g in groups]


def seed000_groups(model):
    """Seed 000's get_parameter_groups, verbatim logic: substring tests in if/elif order."""
    groups = {"backbone": [], "box_head": [], "mask_head": [], "other": []}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        if "backbone" in name:
            groups["backbone"].append(name)
        elif "box_predictor" in name:
            groups["box_head"].append(name)
        elif "mask_predictor" in name:
            groups["mask_head"].append(name)
        else:
            groups["other"].append(name)
    return groups


def test_head_multiplier_reproduces_seed000_group_by_group(maskrcnn):
    groups = build_param_groups(
        maskrcnn, builder="head_multiplier", lr=5e-3, weight_decay=5e-4, head_lr_multiplier=10
    )
    expected = seed000_groups(maskrcnn)
    assert [g["name"] for g in groups] == ["backbone", "other", "box_head", "mask_head"]
    lrs = {"backbone": 5e-3, "box_head": 5e-2, "mask_head": 5e-2, "other": 2.5e-2}
    for group in groups:
        assert group["param_names"] == expected[group["name"]]
        assert group["lr"] == pytest.approx(lrs[group["name"]])
        assert group["weight_decay"] == 5e-4
    assert "roi_heads.box_head.fc6.weight" in expected["other"]  # RPN and the heads' FCs: 5x
    assert len(expected["box_head"]) == 4 and len(expected["mask_head"]) == 4


def test_head_multiplier_merges_equal_groups_on_request(detector):
    groups = build_param_groups(
        detector, builder="head_multiplier", lr=1.0, head_lr_multiplier=5.0, merge_labels=True
    )
    assert [g["name"] for g in groups] == ["backbone", "other+box_head+mask_head"]
    assert groups[1]["param_names"] == [
        "rpn.weight",
        "rpn.bias",
        "roi_heads.box_predictor.weight",
        "roi_heads.box_predictor.bias",
        "roi_heads.mask_predictor.weight",
        "roi_heads.mask_predictor.bias",
    ]


def test_head_multiplier_needs_detector_names(vit):
    with pytest.raises(ConfigError, match="backbone.regex: 'backbone' matches no parameter"):
        build_param_groups(vit, builder="head_multiplier", lr=1.0)


def test_default_builder_on_maskrcnn_by_hand(maskrcnn):
    override = "roi_heads.box_predictor.cls_score.weight"
    groups = build_param_groups(
        maskrcnn,
        builder="default",
        lr=0.02,
        weight_decay=1e-4,
        weight_decay_norm=0.0,
        bias_lr_factor=2.0,
        weight_decay_bias=0.0,
        overrides={"cls_score.weight": {"lr": 0.5, "weight_decay": 1e-3}},
    )
    placed = by_name(groups)
    inventory = collect_model_params(maskrcnn)
    for name, owner in zip(inventory.names, inventory.owners, strict=True):
        bias = name.endswith(".bias")
        norm = isinstance(owner, nn.BatchNorm2d)
        lr = 0.02 * (2.0 if bias else 1.0)
        wd = 0.0 if bias or norm else 1e-4
        if name == override:
            lr, wd = 0.5, 1e-3
        group = placed[name]
        assert (group["lr"], group["weight_decay"]) == (pytest.approx(lr), wd), name
    assert sum(isinstance(o, nn.BatchNorm2d) for o in inventory.owners) == 106
    assert placed[override]["rules"] == ["overrides['cls_score.weight']"]


def test_default_builder_on_vit(vit):
    groups = build_param_groups(vit, builder="default", lr=1e-3, weight_decay=0.05)
    placed = by_name(groups)
    for name, _ in vit.named_parameters():
        norm = ".norm" in name or name.startswith("norm.")
        assert placed[name]["weight_decay"] == (0.0 if norm else 0.05), name
        assert placed[name]["lr"] == 1e-3
    assert {g["name"] for g in groups} == {"default[wd=0.05]", "default[wd=0]"}


def test_rules_builder_on_vit_with_heads_10x(vit):
    groups = build_param_groups(
        vit,
        lr=1e-3,
        weight_decay=0.05,
        rules=[
            {"max_ndim": 1, "weight_decay": 0.0},
            {"match": "head.*", "lr_mult": 10, "group": "head"},
        ],
    )
    placed = by_name(groups)
    for name, param in vit.named_parameters():
        lr = 1e-2 if name.startswith("head.") else 1e-3
        wd = 0.0 if param.ndim <= 1 else 0.05
        assert (placed[name]["lr"], placed[name]["weight_decay"]) == (lr, wd), name
    assert [g["name"] for g in groups] == [
        "default[wd=0.05]",
        "default[wd=0]",
        "head[wd=0.05]",
        "head[wd=0]",
    ]


@PARAM_GROUP_BUILDERS.register("test_two_speed")
def two_speed_groups(model: nn.Module, *, lr: float, weight_decay: float = 0.0, fast: str = ""):
    """A user's builder returning plain dicts: the audit names and checks them."""
    slow = [p for n, p in model.named_parameters() if not n.startswith(fast)]
    quick = [p for n, p in model.named_parameters() if n.startswith(fast)]
    return [
        {"params": slow, "lr": lr, "weight_decay": weight_decay},
        {"params": iter(quick), "lr": lr * 10, "weight_decay": weight_decay, "name": "fast"},
    ]


def test_custom_builder_is_selected_by_name_and_audited(detector):
    groups = build_param_groups(detector, builder="test_two_speed", lr=0.1, fast="roi_heads.")
    assert [g["name"] for g in groups] == ["group0", "fast"]
    assert groups[1]["param_names"] == [
        "roi_heads.box_predictor.weight",
        "roi_heads.box_predictor.bias",
        "roi_heads.mask_predictor.weight",
        "roi_heads.mask_predictor.bias",
    ]
    assert groups.record.builder == "test_two_speed"
    with pytest.raises(
        ConfigError,
        match="unexpected keyword 'fsat' for builder 'test_two_speed'; did you mean 'fast'",
    ):
        build_param_groups(detector, builder="test_two_speed", lr=0.1, fsat="roi_heads.")


def test_plan_param_groups_with_a_builder_step(detector):
    """What a project builder built on the core looks like: a start step plus rules."""
    params = collect_model_params(detector)

    def start(i):
        return [("depth", "lr_mult", 0.5)] if params.names[i].startswith("backbone.") else []

    groups = plan_param_groups(
        detector, [], builder="mine", lr=1.0, weight_decay=0.0, start=start, params=params
    )
    assert by_name(groups)["backbone.0.weight"]["lr"] == 0.5
    assert by_name(groups)["rpn.weight"]["lr"] == 1.0


def test_builder_from_a_config_that_round_trips_through_yaml(detector):
    node = LazyCall(build_param_groups)(
        builder="rules",
        lr=0.1,
        weight_decay=1e-4,
        rules=[
            {"module": "torch.nn.BatchNorm1d", "weight_decay": 0.0},
            {"match": "roi_heads.*", "lr_mult": 10},
        ],
    )
    node._target_ = "pgtrain.param_groups.build_param_groups"
    reloaded = OmegaConf.create(OmegaConf.to_yaml(node), flags={"allow_objects": True})
    reloaded.model = detector
    groups = instantiate(reloaded)
    placed = by_name(groups)
    assert placed["backbone.1.weight"]["weight_decay"] == 0.0
    assert placed["roi_heads.mask_predictor.bias"]["lr"] == 1.0
    assert placed["rpn.weight"]["lr"] == 0.1


@pytest.mark.parametrize(
    "builder, options, message",
    [
        ("default", {"bias_lr_factor": -1}, "bias_lr_factor must be a non-negative number"),
        ("head_multiplier", {"head_lr_multiplier": "10"}, "head_lr_multiplier must be a non"),
        ("rules", {"lr": -0.1}, "lr must be a non-negative number, got -0.1"),
        ("default", {"overrides": {"rpn.bias": 0.0}}, r"overrides\['rpn.bias'\] must map settings"),
    ],
)
def test_builder_option_values_are_checked(detector, builder, options, message):
    options = {"lr": 0.1, **options}
    with pytest.raises(ConfigError, match=message):
        build_param_groups(detector, builder=builder, **options)


def test_first_match_applies_only_the_first_rule_that_selects_a_parameter(detector):
    rules = [
        dict(match="roi_heads.*", lr_mult=10.0, group="heads"),
        dict(match="*", lr_mult=2.0, group="rest"),
    ]
    every = build_param_groups(detector, builder="rules", lr=0.1, rules=rules)
    first = build_param_groups(detector, builder="rules", lr=0.1, rules=rules, first_match=True)

    def lrs(groups):
        # (label, lr); a label shared by groups of different LRs gets a suffix such as [lr=2]
        return {n: (g["name"].split("[")[0], g["lr"]) for g in groups for n in g["param_names"]}

    # Cumulative: both apply (10 x 2) and the last label wins; if / elif: only the first.
    assert lrs(every)["roi_heads.box_predictor.weight"] == ("rest", pytest.approx(2.0))
    assert lrs(first)["roi_heads.box_predictor.weight"] == ("heads", pytest.approx(1.0))
    assert lrs(first)["rpn.weight"] == ("rest", pytest.approx(0.2))
