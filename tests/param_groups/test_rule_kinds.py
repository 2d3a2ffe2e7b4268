"""Selector and setting kinds are tables: a new kind is one entry, and the reference lists them.

Before the tables, a selector kind took four edits in two files (the key list, the parse chain
and the docstring in rules.py, the select chain in assign.py); now it is one entry in
selectors.py (or settings.py for a setting), which these tests add from outside.
"""

import pytest
from torch import nn

import pgtrain.param_groups.rules as rules_module
from pgtrain.errors import ConfigError
from pgtrain.param_groups import SELECTORS, SETTINGS, Selector, Setting, rule_param_groups
from pgtrain.param_groups.settings import OPTIMIZER_OPTION


def _parse_count(value, where):
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ConfigError(f"{where} must be a count, got {value!r}")
    return value


def _pick_large(value, params, ctx):
    return [i for i, t in enumerate(params.tensors) if t.numel() >= value]


MIN_NUMEL = Selector(
    "min_numel", "the parameter has at least this many values.", _parse_count, _pick_large
)


@pytest.fixture
def with_min_numel(monkeypatch):
    monkeypatch.setitem(SELECTORS, "min_numel", MIN_NUMEL)


def model():
    return nn.Sequential(nn.Linear(8, 8), nn.LayerNorm(8), nn.Linear(8, 2))


def by_name(groups):
    return {n: g for g in groups for n in g["param_names"]}


def test_a_selector_added_as_one_entry_selects_and_combines(with_min_numel):
    # 0.weight: 64 values, 2.weight: 16; biases and the norm: 8 or 2.
    groups = rule_param_groups(
        model(), lr=0.1, rules=[{"min_numel": 16, "match": "*.weight", "lr_mult": 10}]
    )
    got = {n: g["lr"] for n, g in by_name(groups).items()}
    assert got == {
        "0.weight": pytest.approx(1.0),
        "0.bias": 0.1,
        "1.weight": 0.1,
        "1.bias": 0.1,
        "2.weight": pytest.approx(1.0),
        "2.bias": 0.1,
    }
    assert "rules[0]" in by_name(groups)["0.weight"]["rules"]


def test_a_selector_added_as_one_entry_checks_its_value_and_joins_the_messages(with_min_numel):
    with pytest.raises(ConfigError, match=r"rules\[0\]\.min_numel must be a count, got -1"):
        rule_param_groups(model(), lr=0.1, rules=[{"min_numel": -1, "lr_mult": 2}])
    with pytest.raises(ConfigError, match="did you mean 'min_numel'.*selectors: .*min_numel"):
        rule_param_groups(model(), lr=0.1, rules=[{"min_numl": 16, "lr_mult": 2}])
    with pytest.raises(ConfigError, match=r"rules\[0\] \(min_numel=1000\) matched no parameter"):
        rule_param_groups(model(), lr=0.1, rules=[{"min_numel": 1000, "lr_mult": 2}])


def test_a_setting_added_as_one_entry_applies(monkeypatch):
    def halve(settings, key, value):
        if value:
            settings.lr_mult *= 0.5

    def parse_flag(value, where):
        if not isinstance(value, bool):
            raise ConfigError(f"{where} must be true or false")
        return value

    monkeypatch.setitem(
        SETTINGS, "half_lr", Setting("half_lr", "halves the LR.", parse_flag, halve)
    )
    groups = rule_param_groups(model(), lr=0.1, rules=[{"match": "2.*", "half_lr": True}])
    got = {n: g["lr"] for n, g in by_name(groups).items()}
    assert got["2.weight"] == got["2.bias"] == pytest.approx(0.05)
    assert got["0.weight"] == 0.1


def test_the_reference_lists_every_kind_from_the_tables():
    doc = rules_module.__doc__
    assert "{selectors}" not in doc and "{settings}" not in doc
    for kind in (*SELECTORS.values(), *SETTINGS.values(), OPTIMIZER_OPTION):
        assert f"- ``{kind.key}``: {kind.doc}" in doc
