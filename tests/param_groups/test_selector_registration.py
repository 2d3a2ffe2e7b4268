"""register_selector: a project adds a selector kind; rules accept its key, builders apply it."""

import uuid

import pytest

from pgtrain.errors import ConfigError
from pgtrain.modeling import MLPClassifier
from pgtrain.param_groups import (
    SELECTORS,
    Selector,
    build_param_groups,
    parse_rules,
    rule_param_groups,
)
from pgtrain.param_groups.selectors import register_selector, selector_reference


def min_numel(key: str) -> Selector:
    """A kind selecting the parameters with at least `value` elements."""

    def parse(value, where):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"{where} must be a positive integer, got {value!r}")
        return value

    def pick(value, params, context):
        return [i for i, t in enumerate(params.tensors) if t.numel() >= value]

    return Selector(key, "parameters with at least this many elements.", parse, pick)


@pytest.fixture
def kind():
    """A freshly registered kind under a unique key, removed again afterwards."""
    key = f"min_numel_{uuid.uuid4().hex[:6]}"
    selector = register_selector(min_numel(key))
    yield selector
    SELECTORS.pop(key, None)


def test_rules_accept_a_registered_kind_and_builders_apply_it(kind):
    model = MLPClassifier(in_dim=16, hidden_dim=64, depth=2, num_classes=4)
    # blocks.N.fc.weight has 64 x 64 = 4096 elements; stem.weight 1024, head.weight 256.
    rules = [{kind.key: 4096, "lr_mult": 2.0, "group": "wide"}]
    (rule,) = parse_rules(rules)
    assert rule.selectors == {kind.key: 4096}
    groups = {g["name"]: g for g in rule_param_groups(model, lr=0.1, rules=rules)}
    assert groups["wide"]["param_names"] == ["blocks.0.fc.weight", "blocks.1.fc.weight"]
    assert groups["wide"]["lr"] == pytest.approx(0.2)
    assert "blocks.0.fc.weight" not in groups["default"]["param_names"]
    # Through the registry, as a config selects it.
    built = build_param_groups(model, builder="rules", lr=0.1, rules=rules)
    assert [g["name"] for g in built] == [g["name"] for g in groups.values()]


def test_a_registered_kind_parses_its_values_and_is_listed(kind):
    with pytest.raises(ConfigError, match=rf"rules\[0\]\.{kind.key} must be a positive integer"):
        parse_rules([{kind.key: "big", "lr_mult": 2.0}])
    assert f"``{kind.key}``" in selector_reference()


def test_a_kind_that_matches_nothing_is_an_error_unless_optional(kind):
    model = MLPClassifier(in_dim=16, hidden_dim=64, depth=2, num_classes=4)
    with pytest.raises(ConfigError, match="matched no parameter"):
        rule_param_groups(model, lr=0.1, rules=[{kind.key: 10**9, "lr_mult": 2.0}])
    rule_param_groups(model, lr=0.1, rules=[{kind.key: 10**9, "lr_mult": 2.0, "optional": True}])


def test_registering_the_same_kind_again_is_allowed(kind):
    assert register_selector(kind) is kind


@pytest.mark.parametrize(
    "key, what",
    [
        ("match", "is taken"),  # a built-in selector kind
        ("lr_mult", "a setting kind"),
        ("group", "a setting kind"),
        ("id", "a rule's own key"),
        ("optional", "a rule's own key"),
        ("momentum", "an optimizer key"),
        ("betas", "an optimizer key"),
    ],
)
def test_a_key_rules_already_read_is_refused_in_one_line_naming_it(key, what):
    before = dict(SELECTORS)
    with pytest.raises(ConfigError) as error:
        register_selector(min_numel(key))
    message = str(error.value)
    assert f"'{key}'" in message and what in message and "\n" not in message
    assert SELECTORS == before


def test_a_key_that_is_no_identifier_is_refused():
    with pytest.raises(ConfigError, match="must be a Python identifier"):
        register_selector(min_numel("min-numel"))
