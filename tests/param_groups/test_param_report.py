"""Report: the summary table, the verbose listing, the JSON form and explain."""

import json

import pytest
import torch
from torch import nn

from pgtrain.errors import ConfigError
from pgtrain.param_groups import (
    build_param_groups,
    format_param_group_details,
    format_param_group_table,
    param_groups_to_dict,
)


def rows(table: str) -> dict[str, list[str]]:
    """Parses the table's data rows into {group: [cells...]} (cells split on 2+ spaces)."""
    lines = table.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("---")) + 1
    out = {}
    for line in lines[start:]:
        if line.startswith(("trainable:", "tied:", "note:")):
            break
        cells = [c for c in line.split("  ") if c.strip()]
        out[cells[0].strip()] = [c.strip() for c in cells[1:]]
    return out


def test_summary_table_of_head_multiplier_groups(detector):
    detector.backbone[1].weight.requires_grad_(False)
    groups = build_param_groups(detector, builder="head_multiplier", lr=0.005, weight_decay=5e-4)
    table = format_param_group_table(groups)
    lines = table.splitlines()
    assert lines[0] == (
        "param groups (builder 'head_multiplier', base lr 0.005, base weight decay 0.0005):"
    )
    assert lines[1].split() == [
        "group",
        "tensors",
        "parameters",
        "lr",
        "lr",
        "scale",
        "weight",
        "decay",
        "rules",
        "applied",
    ]
    assert rows(table) == {
        "backbone": ["3", "48", "0.005", "1", "0.0005", "backbone"],
        "other": ["2", "72", "0.025", "5", "0.0005", "other"],
        "box_head": ["2", "27", "0.05", "10", "0.0005", "box_predictor"],
        "mask_head": ["2", "45", "0.05", "10", "0.0005", "mask_predictor"],
    }
    assert (
        "trainable: 9 tensors, 192 parameters in 4 groups; frozen: 1 tensors, 8 parameters" in table
    )


def test_table_from_an_optimizer_without_names_counts_frozen_through_the_model():
    model = nn.Sequential(nn.Linear(4, 3), nn.Linear(3, 2))
    model[0].bias.requires_grad_(False)
    optimizer = torch.optim.SGD(
        [{"params": [model[0].weight]}, {"params": model[1].parameters(), "lr": 0.5}], lr=0.1
    )
    table = format_param_group_table(optimizer, model)
    assert rows(table) == {
        "group0": ["1", "12", "0.1", "1", "0", "-"],
        "group1": ["2", "8", "0.5", "5", "0", "-"],  # lr / the optimizer's lr
    }
    assert "frozen: 1 tensors, 3 parameters" in table
    with pytest.raises(ConfigError, match="has no 'param_names'; pass the model"):
        format_param_group_table(optimizer)


def test_verbose_listing_matches_seed003_from_an_optimizer():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 3), nn.Linear(3, 2), nn.Linear(2, 1))
    optimizer = torch.optim.Adam(
        [
            {"params": model[0].parameters(), "lr": 0.001, "eps": 1e-8},
            {"params": model[1].parameters(), "lr": 0.002, "eps": 1e-8},
            {"params": model[2].parameters(), "lr": 0.003, "eps": 1e-8},
        ]
    )
    text = format_param_group_details(optimizer, model)
    assert text.splitlines()[:9] == [
        "param group 0 'group0':",
        "  lr: 0.001",
        "  eps: 1e-08",
        "  weight_decay: 0",
        "  betas: (0.9, 0.999)",
        "  rules: -",
        "  parameters (2 tensors, 15 values):",
        "    - 0.weight | shape: (3, 4)",
        "    - 0.bias   | shape: (3,)",
    ]
    assert "    - 2.weight | shape: (1, 2)" in text


def test_verbose_listing_of_builder_groups_shows_momentum_scale_and_frozen(detector):
    detector.rpn.bias.requires_grad_(False)
    groups = build_param_groups(
        detector, lr=0.1, rules=[{"match": "roi_heads.*", "lr_mult": 10, "momentum": 0.5}]
    )
    text = format_param_group_details(groups)
    assert "  lr: 1.0 (scale 10)\n  eps: N/A\n  weight_decay: 0.0\n  momentum: 0.5\n" in text
    assert text.splitlines()[-2] == "frozen (1 tensors, not in the optimizer):"
    assert text.splitlines()[-1].split() == ["-", "rpn.bias", "|", "shape:", "(8,)"]


def test_json_form_round_trips_and_keeps_provenance(vit):
    groups = build_param_groups(
        vit,
        builder="layer_decay",
        lr=1e-3,
        weight_decay=0.05,
        rules=[{"match": "head.*", "betas": [0.9, 0.95]}],
    )
    data = json.loads(json.dumps(param_groups_to_dict(groups)))
    assert data["builder"] == "layer_decay" and data["base_lr"] == 1e-3
    assert data["totals"]["trainable_tensors"] == len(list(vit.parameters()))
    assert data["totals"]["groups"] == len(groups)
    head = next(g for g in data["groups"] if "head.weight" in [p["name"] for p in g["params"]])
    assert head["betas"] == [0.9, 0.95]
    assert head["params"][0] == {"name": "head.weight", "shape": [3, 8]}
    assert data["provenance"]["head.weight"] == [
        ["layer_decay", "group", "layer_3"],
        ["layer_decay", "lr_mult", 1.0],
        ["rules[0]", "betas", [0.9, 0.95]],
    ]
    assert data["sources"]["rules[0]"] == "rules[0] (match='head.*')"
    optimizer = torch.optim.AdamW(groups)
    from_optimizer = json.loads(json.dumps(param_groups_to_dict(optimizer, vit)))
    assert [g["name"] for g in from_optimizer["groups"]] == [g["name"] for g in data["groups"]]


def test_explain_names_rules_and_values(detector):
    groups = build_param_groups(
        detector,
        builder="default",
        lr=0.1,
        weight_decay=1e-4,
        bias_lr_factor=2.0,
        rules=[{"match": "roi_heads.*", "lr_mult": 10, "id": "heads"}],
    )
    text = groups.explain("roi_heads.box_predictor.bias")
    lines = text.splitlines()
    assert lines[0] == "roi_heads.box_predictor.bias (3,): group 'default[lr=2,wd=0.0001]'"
    assert lines[1] == "  lr = 2 (base 0.1 x 2 x 10)"
    assert lines[2] == "  weight_decay = 0.0001 (base 0.0001)"
    assert "  by bias (bias=True): lr_mult=2.0" in lines
    assert "  by heads (match='roi_heads.*'): lr_mult=10.0" in lines
    assert lines[-1].startswith("  precedence: lr = (last absolute lr, else base lr)")
    with pytest.raises(
        ConfigError, match="no parameter named 'rpn.wieght' in the model; did you mean 'rpn.weight'"
    ):
        groups.explain("rpn.wieght")
