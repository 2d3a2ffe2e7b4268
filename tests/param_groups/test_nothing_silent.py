"""Grouping never fails silently: compositions, empty groups, unmatched fresh rules, lost parts."""

import pytest
import torch
from torch import nn

from pgtrain.errors import ConfigError
from pgtrain.param_groups import (
    audit_param_groups,
    build_param_groups,
    format_param_group_table,
    param_groups_to_dict,
)


class TiedLM(nn.Module):
    """An embedding tied to the output projection: one tensor, two names."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(10, 4)
        self.body = nn.Linear(4, 4)
        self.out = nn.Linear(4, 10, bias=False)
        self.out.weight = self.embed.weight


def test_multipliers_from_two_rules_are_marked_and_explained(detector):
    groups = build_param_groups(
        detector,
        builder="head_multiplier",
        lr=0.01,
        rules=[dict(match="roi_heads.*", lr_mult=10.0)],
    )
    box = next(g for g in groups if g["name"] == "box_head")
    assert box["lr"] == pytest.approx(1.0)  # 10 (head) x 10 (the rule) = 100x
    table = format_param_group_table(groups)
    row = next(line for line in table.splitlines() if line.startswith("box_head"))
    assert "100*" in row.split()
    assert (
        "* 'box_head': multipliers from several rules compose: "
        "box_predictor 10 x rules[0] 10 = 100x" in table
    )
    explained = groups.explain("roi_heads.box_predictor.weight")
    assert "lr multipliers compose: box_predictor 10 x rules[0] 10 = 100x" in explained
    # a single source is not marked
    backbone = next(line for line in table.splitlines() if line.startswith("backbone"))
    assert "*" not in backbone


def test_two_rules_on_the_two_names_of_a_tied_weight_are_marked():
    # Observed: rules hitting both names of a tied weight gave 20x with no note.
    groups = build_param_groups(
        TiedLM(),
        builder="rules",
        lr=0.1,
        rules=[
            dict(names=["embed.weight"], lr_mult=10.0, group="embed"),
            dict(names=["out.weight"], lr_mult=2.0),
        ],
    )
    table = format_param_group_table(groups)
    assert (
        "* 'embed': multipliers from several rules compose: rules[0] 10 x rules[1] 2 = 20x" in table
    )
    assert "tied: 'embed.weight' is also 'out.weight' (placed once)" in table


def test_a_generator_passed_to_two_groups_is_an_error():
    model = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2))
    shared = model.parameters()
    with pytest.raises(ConfigError, match="param group 'group1' has no parameters; if one gen"):
        audit_param_groups(model, [{"params": shared}, {"params": shared, "lr": 0.1}])


def test_a_fresh_rule_that_matches_nothing_is_a_note(detector):
    rules = [dict(fresh=True, lr_mult=10.0, group="new")]
    everything_loaded = build_param_groups(detector, lr=0.1, rules=rules, fresh=[])
    notes = param_groups_to_dict(everything_loaded)["notes"]
    assert notes == [
        "rules[0] (fresh=True) matched no parameter: the initial weights provide every parameter"
    ]
    unknown = build_param_groups(detector, lr=0.1, rules=rules, fresh=None)
    assert "fresh parameters are not known" in param_groups_to_dict(unknown)["notes"][0]
    narrowed = build_param_groups(
        detector,
        lr=0.1,
        rules=[dict(fresh=True, match="backbone.*", lr_mult=10.0)],
        fresh=["rpn.weight", "rpn.bias"],
    )
    assert param_groups_to_dict(narrowed)["notes"] == [
        "rules[0] (match='backbone.*', fresh=True) matched no parameter: none of the 2 fresh "
        "parameters satisfies its other selectors"
    ]
    found = build_param_groups(detector, lr=0.1, rules=rules, fresh=["rpn.weight"])
    assert param_groups_to_dict(found)["notes"] == []


def test_a_mask_head_under_another_name_is_a_note_not_a_silent_merge(detector):
    # Observed: `roi_heads.mask_head_logits` went to `other` at 5x with no mask_head group.
    detector.roi_heads.mask_head_logits = detector.roi_heads.mask_predictor
    del detector.roi_heads.mask_predictor
    groups = build_param_groups(detector, builder="head_multiplier", lr=0.01)
    assert "mask_head" not in [g["name"] for g in groups]
    notes = param_groups_to_dict(groups)["notes"]
    assert len(notes) == 1 and notes[0].startswith(
        "no parameter name contains 'mask_predictor', so there is no 'mask_head' group and the "
        "mask parameters ('roi_heads.mask_head_logits.weight', 'roi_heads.mask_head_logits.bias')"
        " are in 'other' at 5x"
    )


def test_a_detector_without_any_mask_part_says_so(detector):
    del detector.roi_heads.mask_predictor
    groups = build_param_groups(detector, builder="head_multiplier", lr=0.01)
    assert param_groups_to_dict(groups)["notes"] == [
        "no mask_predictor in the model (a Faster R-CNN has none): no 'mask_head' group"
    ]


def test_skip_accepts_declared_names_a_model_lacks(vit):
    # timm's idiom: skip=list(model.no_weight_decay()); TinyViT declares dist_token, which it
    # does not have.
    groups = build_param_groups(
        vit, builder="layer_decay", lr=1.0, weight_decay=0.05, skip=list(vit.no_weight_decay())
    )
    report = param_groups_to_dict(groups)
    assert any("(ignored): dist_token" in note for note in report["notes"])
    assert groups.record.decisions["pos_embed"].weight_decay == 0.0
    with pytest.raises(ConfigError, match="'pos_embd' matches no parameter"):
        build_param_groups(vit, builder="layer_decay", lr=1.0, skip=["pos_embd"])


def test_skip_accepts_a_buffer_name(vit):
    vit.register_buffer("fixed_embed", torch.zeros(3))
    groups = build_param_groups(vit, builder="layer_decay", lr=1.0, skip=["fixed_embed"])
    assert any("(ignored): fixed_embed" in n for n in param_groups_to_dict(groups)["notes"])
