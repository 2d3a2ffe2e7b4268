"""Audit: every error a user can cause, with its message, and what the audit accepts."""

import pytest
import torch
from torch import nn

from pgtrain.errors import ConfigError, RegistryError
from pgtrain.param_groups import (
    audit_param_groups,
    build_param_groups,
    format_param_group_table,
    layer_decay_param_groups,
    rule_param_groups,
)


def test_rule_matching_nothing_names_three_closest_names(maskrcnn):
    with pytest.raises(ConfigError) as info:
        build_param_groups(
            maskrcnn, lr=0.01, rules=[{"match": "roi_heads.box_predictr.*", "lr_mult": 10}]
        )
    message = str(info.value)
    assert message.startswith("rules[0].match: 'roi_heads.box_predictr.*' matches no parameter")
    closest = message.split("closest names: ")[1].split(" (")[0].split(", ")
    assert len(closest) == 3
    assert closest[0].startswith("'roi_heads.box_predictor.")
    assert "\n" not in message


def test_entry_of_a_name_list_matching_nothing_is_an_error(vit):
    with pytest.raises(
        ConfigError,
        match=r"rules\[0\].names: 'pos_embd' matches no parameter; "
        r"closest names: 'pos_embed'",
    ):
        rule_param_groups(vit, lr=1.0, rules=[{"names": ["cls_token", "pos_embd"], "lr": 0.0}])


def test_skip_list_entry_matching_nothing_is_an_error(vit):
    with pytest.raises(ConfigError, match=r"skip.names: 'pos_embd' matches no parameter; closest"):
        layer_decay_param_groups(vit, lr=1.0, skip=["pos_embd"])


def test_rule_whose_selectors_match_no_common_parameter_is_an_error(vit):
    rule = {"match": "head.*", "module": "layernorm", "lr_mult": 2}
    with pytest.raises(
        ConfigError,
        match=r"rules\[0\] \(match='head.\*', module='layernorm'\) "
        "matched no parameter",
    ):
        rule_param_groups(vit, lr=1.0, rules=[rule])


def test_module_type_owning_nothing_is_an_error(vit):
    with pytest.raises(
        ConfigError,
        match="no module of type 'batchnorm' owns a parameter; "
        "module types that own parameters: .*LayerNorm",
    ):
        rule_param_groups(vit, lr=1.0, rules=[{"module": "batchnorm", "weight_decay": 0.0}])


def test_optional_rule_may_match_nothing(vit):
    groups = rule_param_groups(
        vit, lr=1.0, rules=[{"module": "batchnorm", "weight_decay": 0.0, "optional": True}]
    )
    assert len(groups) == 1


def test_unknown_builder_option_suggests_the_right_one(vit):
    with pytest.raises(
        ConfigError,
        match="optimizer.params: unexpected keyword 'decy' for builder 'layer_decay'; did you "
        "mean 'decay' or 'weight_decay'\\?",
    ):
        build_param_groups(vit, builder="layer_decay", lr=1.0, decy=0.5)


def test_missing_lr_is_an_error(vit):
    with pytest.raises(ConfigError, match="builder 'rules' needs 'lr'; set optimizer.params.lr"):
        build_param_groups(vit, builder="rules", weight_decay=0.1)


def test_unknown_builder_suggests_close_names(vit):
    with pytest.raises(
        RegistryError, match="No 'layer_decy' in PARAM_GROUP_BUILDERS; did you mean 'layer_decay'"
    ):
        build_param_groups(vit, builder="layer_decy", lr=1.0)


def test_model_not_bound_is_an_error():
    with pytest.raises(ConfigError, match="bind the model at run time"):
        build_param_groups(None, lr=1.0)


def test_stray_tensor_is_an_error(vit):
    stray = torch.randn(3, 64, 64, requires_grad=True)  # seed 004
    groups = [{"params": list(vit.parameters())}, {"params": stray, "name": "extra"}]
    with pytest.raises(
        ConfigError,
        match=r"param group 'extra' holds a tensor of shape "
        r"\(3, 64, 64\) that is not a parameter of the model",
    ):
        audit_param_groups(vit, groups)


def test_parameter_in_two_groups_is_an_error(vit):
    params = list(vit.parameters())
    groups = [{"params": params, "name": "a"}, {"params": params[:1], "name": "b"}]
    with pytest.raises(
        ConfigError, match="parameter 'cls_token' is in param group 'a' and again in 'b'"
    ):
        audit_param_groups(vit, groups)


def test_parameter_twice_in_one_group_or_a_non_tensor_is_an_error(vit):
    params = list(vit.parameters())
    twice = [{"params": [*params, params[3]], "name": "a"}]
    with pytest.raises(ConfigError, match=r"is in param group 'a' and again in 'a'"):
        audit_param_groups(vit, twice)
    with pytest.raises(ConfigError, match="param group 'b' holds a str, not a parameter tensor"):
        audit_param_groups(vit, [{"params": [*params[:2], "w"], "name": "b"}])
    names = [n for n, _ in vit.named_parameters()]
    names[5], names[6] = names[6], names[5]  # right names, in the wrong order
    with pytest.raises(ConfigError, match=rf"param_names\[5\] is '{names[5]}'"):
        audit_param_groups(vit, [{"params": params, "param_names": names}])


def test_trainable_parameter_in_no_group_is_an_error(vit):
    params = list(vit.named_parameters())
    groups = [{"params": [p for n, p in params if n != "head.bias"]}]
    with pytest.raises(
        ConfigError,
        match=r"1 trainable parameter\(s\) are in no param group: "
        "'head.bias'",
    ):
        audit_param_groups(vit, groups)


def test_wrong_param_names_are_an_error(vit):
    groups = [
        {"params": list(vit.parameters()), "param_names": ["x"] * len(list(vit.parameters()))}
    ]
    with pytest.raises(
        ConfigError,
        match=r"param_names\[0\] is 'x' but the tensor there is the "
        "model's 'cls_token'",
    ):
        audit_param_groups(vit, groups)


def test_unordered_params_and_empty_groups_are_errors(vit):
    with pytest.raises(ConfigError, match="'params' must be an ordered list, got a set"):
        audit_param_groups(vit, [{"params": set(vit.parameters())}])
    with pytest.raises(ConfigError, match="param groups are empty"):
        audit_param_groups(vit, iter([]))


def test_generators_are_read_once_and_become_lists(vit):
    """Seed 004: a generator passed twice is empty the second time; the audit reads it once."""
    head = vit.head.parameters()
    rest = (p for n, p in vit.named_parameters() if not n.startswith("head."))
    groups = audit_param_groups(
        vit, ({"params": g, "lr": lr} for g, lr in [(rest, 0.1), (head, 1.0)])
    )
    assert [len(g["params"]) for g in groups] == [len(list(vit.parameters())) - 2, 2]
    assert groups[1]["param_names"] == ["head.weight", "head.bias"]
    assert [g["name"] for g in groups] == ["group0", "group1"]
    optimizer = torch.optim.SGD(groups, lr=0.5)
    assert [len(g["params"]) for g in optimizer.param_groups] == [len(groups[0]["params"]), 2]


def test_plain_parameters_and_named_parameters_are_accepted(vit):
    plain = audit_param_groups(vit, vit.parameters())
    named = audit_param_groups(vit, vit.named_parameters())
    assert (
        plain[0]["param_names"] == named[0]["param_names"] == [n for n, _ in vit.named_parameters()]
    )


class Tied(nn.Module):
    """An encoder and a decoder sharing one weight, plus a shared module under two names."""

    def __init__(self) -> None:
        super().__init__()
        self.encoder = nn.Embedding(5, 4)
        self.decoder = nn.Linear(4, 5, bias=False)
        self.decoder.weight = self.encoder.weight
        self.shared = nn.Linear(4, 4)
        self.again = self.shared


def test_tied_parameter_is_placed_once_and_reported():
    model = Tied()
    groups = rule_param_groups(model, lr=1.0, rules=[{"match": "decoder.*", "lr_mult": 3}])
    names = [n for g in groups for n in g["param_names"]]
    assert names == ["encoder.weight", "shared.weight", "shared.bias"]
    # the rule matched the tied parameter through its other name
    assert next(g for g in groups if "encoder.weight" in g["param_names"])["lr"] == 3.0
    assert groups.record.aliases == {
        "encoder.weight": ["decoder.weight"],
        "shared.weight": ["again.weight"],
        "shared.bias": ["again.bias"],
    }
    table = format_param_group_table(groups)
    assert "tied: 'encoder.weight' is also 'decoder.weight' (placed once)" in table
    assert "tied: also named decoder.weight" in groups.explain("decoder.weight")


def test_tied_parameter_given_twice_is_an_error():
    model = Tied()
    groups = [{"params": [model.encoder.weight]}, {"params": list(model.parameters())}]
    with pytest.raises(
        ConfigError,
        match=r"parameter 'encoder.weight' \(tied: also named "
        r"decoder.weight\) is in param group 'group0' and again in 'group1'",
    ):
        audit_param_groups(model, groups)


def test_frozen_parameters_are_counted_not_grouped(detector):
    for p in detector.backbone.parameters():
        p.requires_grad_(False)
    groups = rule_param_groups(detector, lr=1.0)
    assert [n for g in groups for n in g["param_names"]] == [
        "rpn.weight",
        "rpn.bias",
        "roi_heads.box_predictor.weight",
        "roi_heads.box_predictor.bias",
        "roi_heads.mask_predictor.weight",
        "roi_heads.mask_predictor.bias",
    ]
    table = format_param_group_table(groups)
    frozen_values = 4 * 8 + 8 + 8 + 8
    assert f"frozen: 4 tensors, {frozen_values} parameters" in table
