"""Rules: each selector, each setting, and the precedence between rules."""

import pytest
import torch
from torch import nn

from pgtrain.errors import ConfigError
from pgtrain.param_groups import build_param_groups, is_norm, rule_param_groups


def decisions(groups):
    """Maps each parameter name to (group name, lr, weight_decay, lr_scale)."""
    return {
        n: (g["name"], g["lr"], g["weight_decay"], g["lr_scale"])
        for g in groups
        for n in g["param_names"]
    }


def names_in(groups, group_name):
    return next(g["param_names"] for g in groups if g["name"] == group_name)


def test_no_rules_one_group_at_base_values(vit):
    groups = rule_param_groups(vit, lr=0.1, weight_decay=1e-4)
    assert len(groups) == 1
    (group,) = groups
    assert group["name"] == "default"
    assert group["param_names"] == [n for n, _ in vit.named_parameters()]
    assert [id(p) for p in group["params"]] == [id(p) for p in vit.parameters()]
    assert (group["lr"], group["weight_decay"], group["lr_scale"]) == (0.1, 1e-4, 1.0)


def test_glob_star_crosses_dots_and_must_match_whole_name(vit):
    groups = rule_param_groups(vit, lr=1.0, rules=[{"match": "blocks.*.bias", "group": "b"}])
    expected = [
        n for n, _ in vit.named_parameters() if n.startswith("blocks.") and n.endswith(".bias")
    ]
    assert len(expected) == 10
    assert names_in(groups, "b") == expected
    # `q_bias` does not end with ".bias": the glob matches whole names only.
    assert "blocks.0.attn.q_bias" not in names_in(groups, "b")


def test_regex_searches_anywhere(vit):
    groups = rule_param_groups(vit, lr=1.0, rules=[{"regex": r"attn\.[qv]_bias", "group": "qv"}])
    assert names_in(groups, "qv") == [
        "blocks.0.attn.q_bias",
        "blocks.0.attn.v_bias",
        "blocks.1.attn.q_bias",
        "blocks.1.attn.v_bias",
    ]


def test_names_match_full_name_or_dotted_suffix(wrapped_vit):
    groups = rule_param_groups(
        wrapped_vit, lr=1.0, rules=[{"names": ["pos_embed", "roi_heads.bias"], "group": "n"}]
    )
    assert names_in(groups, "n") == ["backbone.net.pos_embed", "roi_heads.bias"]


class ScaleNorm2d(nn.Module):
    """A user norm class: found by the ``norm`` alias through its name."""

    def __init__(self) -> None:
        super().__init__()
        self.gain = nn.Parameter(torch.ones(4))


def test_module_selectors_alias_import_path_class_and_predicate():
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3),
        nn.BatchNorm2d(4),
        nn.GroupNorm(2, 4),
        ScaleNorm2d(),
        nn.LayerNorm(4),
        nn.Linear(4, 2),
    )
    norm = rule_param_groups(model, lr=1.0, rules=[{"module": "norm", "group": "norm"}])
    assert names_in(norm, "norm") == [
        "1.weight",
        "1.bias",
        "2.weight",
        "2.bias",
        "3.gain",
        "4.weight",
        "4.bias",
    ]
    by_path = rule_param_groups(
        model, lr=1.0, rules=[{"module": "torch.nn.LayerNorm", "group": "x"}]
    )
    assert names_in(by_path, "x") == ["4.weight", "4.bias"]
    by_class = rule_param_groups(
        model, lr=1.0, rules=[{"module": [nn.Conv2d, "linear"], "group": "x"}]
    )
    assert names_in(by_class, "x") == ["0.weight", "0.bias", "5.weight", "5.bias"]
    by_predicate = rule_param_groups(
        model, lr=1.0, rules=[{"module": lambda m: isinstance(m, ScaleNorm2d), "group": "x"}]
    )
    assert names_in(by_predicate, "x") == ["3.gain"]


def test_is_norm_covers_torch_and_torchvision_norms():
    from torchvision.ops import FrozenBatchNorm2d

    for module in (
        nn.BatchNorm1d(2),
        nn.SyncBatchNorm(2),
        nn.InstanceNorm2d(2),
        nn.GroupNorm(1, 2),
        nn.LayerNorm(2),
        nn.RMSNorm(2),
        FrozenBatchNorm2d(2),
    ):
        assert is_norm(module), type(module).__name__
    assert not is_norm(nn.Linear(2, 2))


def test_bias_and_ndim_selectors(vit):
    groups = rule_param_groups(
        vit,
        lr=1.0,
        rules=[
            {"max_ndim": 1, "group": "flat"},
            {"bias": True, "group": "bias"},  # later rule: its label wins for biases
        ],
    )
    flat, bias = set(names_in(groups, "flat")), set(names_in(groups, "bias"))
    params = dict(vit.named_parameters())
    assert bias == {n for n in params if n.endswith(".bias") or n.endswith("_bias")}
    assert flat == {n for n, p in params.items() if p.ndim <= 1} - bias
    assert "blocks.0.attn.q_bias" in bias


def test_hint_selector_prefixes_submodule_hints(wrapped_vit):
    groups = rule_param_groups(
        wrapped_vit,
        lr=1.0,
        weight_decay=0.1,
        rules=[{"no_weight_decay_hint": True, "weight_decay": 0.0}],
    )
    no_wd = [n for g in groups if g["weight_decay"] == 0.0 for n in g["param_names"]]
    assert no_wd == ["backbone.net.cls_token", "backbone.net.pos_embed"]
    assert any("backbone.net.dist_token" in note for note in groups.record.notes)


def test_fresh_selector_and_generator_fresh(detector):
    fresh = (n for n in ["roi_heads.box_predictor.weight", "backbone.1.running_mean"])
    groups = build_param_groups(
        detector, lr=0.1, fresh=fresh, rules=[{"fresh": True, "lr_mult": 10, "group": "new"}]
    )
    assert names_in(groups, "new") == ["roi_heads.box_predictor.weight"]
    assert next(g for g in groups if g["name"] == "new")["lr"] == pytest.approx(1.0)


def test_fresh_rule_without_fresh_names_matches_nothing_and_says_so(detector):
    groups = build_param_groups(detector, lr=0.1, rules=[{"fresh": True, "lr_mult": 10}])
    assert [g["lr"] for g in groups] == [0.1]
    assert any("fresh parameters are not known" in note for note in groups.record.notes)


def test_requires_grad_selector_and_frozen_setting(detector):
    detector.backbone[0].weight.requires_grad_(False)
    groups = rule_param_groups(detector, lr=1.0, rules=[{"match": "rpn.*", "frozen": True}])
    placed = {n for g in groups for n in g["param_names"]}
    assert "backbone.0.weight" not in placed and "rpn.weight" not in placed
    assert detector.rpn.weight.requires_grad  # frozen by rule leaves requires_grad alone
    unfrozen = rule_param_groups(
        detector,
        lr=1.0,
        rules=[{"requires_grad": False, "frozen": False, "lr": 0.0, "group": "later"}],
    )
    assert names_in(unfrozen, "later") == ["backbone.0.weight"]


def test_precedence_multipliers_multiply_and_last_absolute_wins(detector):
    rules = [
        {"match": "roi_heads.*", "lr_mult": 10, "weight_decay": 0.5},
        {"match": "*.bias", "lr_mult": 2, "wd_mult": 0.5},
        {"match": "roi_heads.box_predictor.*", "lr": 0.3, "weight_decay": 0.25},
        {"match": "*", "betas": [0.9, 0.95], "id": "all"},
        {"match": "roi_heads.mask_predictor.*", "betas": (0.5, 0.5)},
    ]
    groups = rule_param_groups(detector, lr=0.01, weight_decay=1e-4, rules=rules)
    d = decisions(groups)
    # lr = (last absolute lr, else base) x every lr_mult; weight decay likewise.
    assert d["rpn.weight"][1:] == (0.01, 1e-4, 1.0)
    assert d["rpn.bias"][1:3] == (0.01 * 2, 1e-4 * 0.5)
    assert d["roi_heads.mask_predictor.weight"][1:3] == (0.01 * 10, 0.5)
    assert d["roi_heads.mask_predictor.bias"][1:3] == (0.01 * (10 * 2), 0.5 * 0.5)
    assert d["roi_heads.box_predictor.weight"][1:3] == (0.3 * 10, 0.25)
    assert d["roi_heads.box_predictor.bias"][1:4] == pytest.approx((0.3 * 20, 0.125, 600.0))
    betas = {n: g["betas"] for g in groups for n in g["param_names"]}
    assert betas["rpn.weight"] == (0.9, 0.95)  # YAML lists become tuples
    assert betas["roi_heads.mask_predictor.weight"] == (0.5, 0.5)
    assert "all" in next(g for g in groups if "rpn.weight" in g["param_names"])["rules"]


def test_rules_from_a_generator_are_read_once(detector):
    rules = ({"match": m, "lr_mult": 2} for m in ["rpn.*"])
    groups = rule_param_groups(detector, lr=1.0, rules=rules)
    assert decisions(groups)["rpn.weight"][1] == 2.0


@pytest.mark.parametrize(
    "rule, message",
    [
        ({"match": "*", "lr_mul": 2}, "rules[0]: unknown key 'lr_mul'; did you mean 'lr_mult'"),
        ({"lr_mult": 2}, "rules[0] has no selector"),
        ({"match": "*"}, "rules[0] sets nothing"),
        ({"match": "*", "lr_mult": -1}, "rules[0].lr_mult must be a non-negative number"),
        ({"bias": "yes", "lr_mult": 2}, "rules[0].bias must be true or false"),
        ({"regex": "(", "lr_mult": 2}, "rules[0].regex: invalid regular expression"),
        ({"module": "layernrom", "lr_mult": 2}, "did you mean 'layernorm'?"),
        ("match everything", "rules[0] must be a mapping"),
    ],
)
def test_invalid_rules_are_config_errors(detector, rule, message):
    with pytest.raises(ConfigError) as info:
        rule_param_groups(detector, lr=1.0, rules=[rule])
    assert message in str(info.value)
