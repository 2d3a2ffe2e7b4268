"""What the faster build keeps: per-parameter records of their own, no state across builds, and
the same answers from the shortcuts (settling once per step and rules, ordinals per groups)."""

import torch
from torch import nn

from pgtrain.param_groups import (
    build_param_groups,
    collect_model_params,
    plan_param_groups,
    resolve_layer_ids,
)
from pgtrain.param_groups.decide import decide
from pgtrain.param_groups.merge import merge_param_groups
from pgtrain.param_groups.rules import parse_rules
from pgtrain.param_groups.selectors import _is_bias


def test_parameters_settled_together_keep_records_of_their_own(vit):
    groups = build_param_groups(vit, builder="layer_decay", lr=1.0, weight_decay=0.05, decay=0.5)
    first = groups.record.decision("blocks.0.mlp.fc1.weight")
    other = groups.record.decision("blocks.0.mlp.fc2.weight")
    assert first.applied == other.applied and first.applied is not other.applied
    assert first.options is not other.options
    first.applied.append(("mine", "lr_mult", 3.0))
    first.options["momentum"] = 0.5
    assert ("mine", "lr_mult", 3.0) not in other.applied and not other.options


def test_a_step_is_shared_only_when_it_is_the_same_tuple(vit):
    """Equal-looking values of two types (1 and 1.0) are not one step: each keeps its own."""
    params = collect_model_params(vit)
    one, one_float = (("depth", "lr_mult", 1),), (("depth", "lr_mult", 1.0),)

    def start(i):
        return one if i % 2 else [*one_float]  # a fresh list every call: settled on its own

    decisions = decide(params, [], lr=2, weight_decay=0.0, start=start)
    assert [type(d.applied[0][2]) for d in decisions[:4]] == [float, int, float, int]


def test_first_match_and_later_rules_still_compose_in_order(detector):
    params = collect_model_params(detector)
    first = parse_rules(
        [{"regex": "backbone", "lr_mult": 2.0}, {"match": "*", "lr_mult": 3.0}], "first"
    )
    rules = parse_rules([{"bias": True, "lr_mult": 5.0, "group": "bias"}])
    by_name = {
        d.name: d for d in decide(params, rules, lr=1.0, weight_decay=0.0, first_match=first)
    }
    assert by_name["backbone.0.weight"].lr == 2.0
    assert by_name["backbone.0.bias"].lr == 10.0 and by_name["backbone.0.bias"].label == "bias"
    assert by_name["rpn.bias"].lr == 15.0
    assert by_name["rpn.bias"].sources() == ["first[1]", "rules[0]"]


def test_a_second_build_sees_a_changed_model(vit):
    before = build_param_groups(vit, builder="layer_decay", lr=1.0, decay=0.5)
    vit.blocks[0].mlp.fc1.weight.requires_grad_(False)
    vit.extra = nn.Linear(2, 2)
    after = build_param_groups(vit, builder="layer_decay", lr=1.0, decay=0.5)
    names = {n for g in after for n in g["param_names"]}
    assert "blocks.0.mlp.fc1.weight" not in names and "extra.weight" in names
    assert {n for g in before for n in g["param_names"]} - names == {"blocks.0.mlp.fc1.weight"}


def test_group_rules_list_every_member_source_in_first_seen_order(detector):
    groups = build_param_groups(
        detector,
        lr=1.0,
        rules=[
            {"match": "rpn.*", "lr_mult": 1.0, "id": "rpn_any"},
            {"names": ["rpn.bias"], "lr_mult": 1.0, "id": "rpn_bias"},
        ],
    )
    (group,) = [g for g in groups if "rpn.weight" in g["param_names"]]
    assert "rpn.bias" in group["param_names"]
    assert group["rules"] == ["rpn_any", "rpn_bias"]


def test_bias_names():
    for name in ("bias", "fc.bias", "attn.q_bias", "q_bias", "a.b_bias"):
        assert _is_bias(name), name
    for name in ("biases", "fc.bias.weight", "bias_table", "fc.weight", "fc.unbiased"):
        assert not _is_bias(name), name


def test_hints_naming_a_module_or_nothing():
    class Model(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = nn.Linear(2, 2)
            self.head = nn.Linear(2, 2)
            self.embed_norm = nn.LayerNorm(2)  # shares the prefix "embed", not the module

        def no_weight_decay(self):
            return ["embed", "absent"]

    params = collect_model_params(Model())
    named = {h: sorted(params.names[i] for i in hits) for h, hits in params.hint_matches.items()}
    assert named == {"embed": ["embed.bias", "embed.weight"], "absent": []}


def test_the_inventory_maps_tensors_and_aliases_like_a_fresh_walk():
    shared = nn.Linear(2, 2)
    model = nn.Sequential(shared, nn.ReLU(), shared, nn.Linear(2, 2))
    model[3].weight = shared.weight  # tied across modules
    params = collect_model_params(model)
    assert params.names == ["0.weight", "0.bias", "3.bias"]
    assert params.aliases == {0: ["2.weight", "3.weight"], 1: ["2.bias"]}
    assert params.index_of_tensor == {id(t): i for i, t in enumerate(params.tensors)}
    assert [p for p, _ in params.modules] == ["", "0", "1", "3"]


def test_group_matcher_ordinals_with_an_optional_group():
    class Model(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem = nn.Linear(2, 2)
            self.blocks = nn.ModuleList(nn.Linear(2, 2) for _ in range(3))
            self.head = nn.Linear(2, 2)

        def group_matcher(self, coarse=False):
            # the second group never takes part here: it is None, and left out
            return {"stem": r"^stem", "blocks": [(r"^blocks\.(\d+)(?:\.x(\d+))?", None)]}

    model = Model()
    found = resolve_layer_ids(model, collect_model_params(model).names, "group_matcher")
    assert found.ids["stem.weight"] == 0
    assert [found.ids[f"blocks.{i}.weight"] for i in range(3)] == [1, 2, 3]
    assert [found.ids[f"blocks.{i}.bias"] for i in range(3)] == [1, 2, 3]
    assert found.ids["head.weight"] == 4 and found.num_layers == 3


def test_merge_keeps_an_option_from_renaming_a_group(detector):
    params = collect_model_params(detector)
    decisions = decide(
        params, [], lr=1.0, weight_decay=0.0, start=lambda i: [("step", "name", "odd")]
    )
    groups = merge_param_groups(decisions, params.tensors)
    assert [g["name"] for g in groups] == ["default"]


def test_plan_with_a_builder_step_returning_generators(detector):
    params = collect_model_params(detector)
    groups = plan_param_groups(
        detector,
        [],
        builder="mine",
        lr=1.0,
        weight_decay=0.0,
        start=lambda i: (s for s in [("depth", "lr_mult", 0.5)] if i == 0),
        params=params,
    )
    lrs = {n: g["lr"] for g in groups for n in g["param_names"]}
    assert lrs[params.names[0]] == 0.5
    assert set(lrs.values()) == {0.5, 1.0}
    assert torch.optim.SGD(groups, lr=1.0)


def test_builder_steps_as_a_list_equal_steps_from_a_function(vit):
    import pytest

    params = collect_model_params(vit)
    count = len(params.names)
    layers = [(("mine", "lr_mult", float(i % 3 + 1)),) for i in range(3)]

    def settle(start):
        decisions = decide(params, [], lr=1.0, weight_decay=0.0, start=start)
        return [(d.name, d.lr, d.applied) for d in decisions]

    by_list = settle([layers[i % 3] for i in range(count)])
    assert by_list == settle(lambda i: layers[i % 3])
    assert {lr for _, lr, _ in by_list} == {1.0, 2.0, 3.0}
    with pytest.raises(ValueError, match=f"start gives 2 steps for {count} parameters"):
        decide(params, [], lr=1.0, weight_decay=0.0, start=layers[:2])


def test_selectors_in_c_pick_what_a_per_name_test_picks():
    """The name and flag selectors test all names at once; a plain per-name loop agrees."""
    import fnmatch
    import re

    from pgtrain.param_groups.decide import select

    class Model(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.bias = nn.Parameter(torch.zeros(2))  # a top-level parameter named "bias"
            self.emb = nn.Embedding(4, 2)
            self.attn = nn.Linear(2, 2)
            self.attn.q_bias = nn.Parameter(torch.zeros(2))
            self.head = nn.Linear(2, 4, bias=False)
            self.head.weight = self.emb.weight  # tied: head.weight is an alias
            self.attn.weight.requires_grad_(False)

    model = Model()
    params = collect_model_params(model)
    every = {i: [n, *params.aliases.get(i, [])] for i, n in enumerate(params.names)}

    def expected(test):
        return [i for i, names in every.items() if any(test(n) for n in names)]

    cases = [
        ({"match": "head.*"}, lambda n: fnmatch.fnmatchcase(n, "head.*")),
        ({"regex": r"attn\.(q_)?bias$"}, lambda n: re.search(r"attn\.(q_)?bias$", n)),
        ({"names": ["weight"]}, lambda n: n == "weight" or n.endswith(".weight")),
        ({"names": ["bias"]}, lambda n: n == "bias" or n.endswith(".bias")),
        ({"bias": True}, _is_bias),
    ]
    for selectors, test in cases:
        rule = parse_rules([{**selectors, "lr_mult": 2.0}])[0]
        assert select(rule, params, None) == expected(test), selectors
    biases = parse_rules([{"bias": False, "lr_mult": 2.0}])[0]
    assert select(biases, params, None) == [
        i for i, n in enumerate(params.names) if not _is_bias(n)
    ]
    frozen = parse_rules([{"requires_grad": False, "frozen": False}])[0]
    assert [params.names[i] for i in select(frozen, params, None)] == ["attn.weight"]
    assert _is_bias("bias") and _is_bias("attn.q_bias") and "head.weight" in params.aliases[1]
