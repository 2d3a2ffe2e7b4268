"""Every value a config may hold is built as written, from the .py file and from its saved YAML."""

import http
import textwrap
import uuid

import pytest
import torch
from torch import nn

from pgtrain.config import LazyConfig, check_calls, instantiate
from pgtrain.errors import ConfigError

HEADER = """
import functools, http, operator, types
import torch
from torch import nn
from pgtrain.config import LazyCall as L
"""


def round_trip(tmp_path, body):
    """Loads a .py config, saves it, loads the YAML, saves again (the same text); returns the
    objects built from the .py config and from the YAML, and the YAML text."""
    src = tmp_path / f"cfg_{uuid.uuid4().hex[:8]}.py"
    src.write_text(HEADER + textwrap.dedent(body))
    loaded = LazyConfig.load(str(src))
    first = tmp_path / "first.yaml"
    LazyConfig.save(loaded, str(first))
    back = LazyConfig.load(str(first))
    second = tmp_path / "second.yaml"
    LazyConfig.save(back, str(second))
    assert second.read_text() == first.read_text()
    for cfg in (loaded, back):
        check_calls(cfg)
    return instantiate(loaded), instantiate(back), first.read_text()


def test_partial_keywords_survive_load_and_save(tmp_path):
    misc = pytest.importorskip("torchvision.ops.misc")
    body = """
    from torchvision.ops.misc import Conv2dNormActivation
    model = L(Conv2dNormActivation)(
        in_channels=3, out_channels=4, norm_layer=functools.partial(nn.BatchNorm2d, eps=1e-3)
    )
    """
    for built in round_trip(tmp_path, body)[:2]:
        assert isinstance(built["model"], misc.Conv2dNormActivation)
        assert built["model"][1].eps == 1e-3


def test_partial_positional_and_nested_values(tmp_path):
    body = """
    calls = L(types.SimpleNamespace)(
        pow2=functools.partial(pow, 2),
        layer=functools.partial(
            nn.Sequential, functools.partial(nn.BatchNorm1d, 4, momentum=0.5)
        ),
    )
    # A partial of a partial of a class: nested keywords are kept.
    norm = dict(make=functools.partial(functools.partial, nn.LayerNorm, eps=1e-2))
    """
    *built, text = round_trip(tmp_path, body)
    assert "momentum: 0.5" in text
    for cfg in built:
        assert vars(cfg["calls"])["pow2"](5) == 32
        inner = vars(cfg["calls"])["layer"].args[0]
        assert inner.func is nn.BatchNorm1d and inner.args == (4,)
        assert inner.keywords == {"momentum": 0.5}
        assert cfg["norm"]["make"]()(3).eps == 1e-2


def test_partial_as_target_keeps_its_keywords_as_overridable_keys(tmp_path):
    body = """
    norm = L(functools.partial(nn.BatchNorm2d, eps=1e-3, momentum=0.2))(num_features=4, eps=1e-4)
    """
    *built, text = round_trip(tmp_path, body)
    assert "eps: 0.0001" in text and "momentum: 0.2" in text
    for cfg in built:
        assert cfg["norm"].eps == 1e-4 and cfg["norm"].momentum == 0.2


def test_partial_target_with_positional_arguments_cannot_be_saved(tmp_path):
    body = """
    norm = L(functools.partial(nn.BatchNorm2d, 4))(eps=1e-3)
    """
    with pytest.raises(ConfigError, match="^norm._target_: .*positional.*keywords"):
        round_trip(tmp_path, body)


def test_dtypes_functions_classes_and_enums_round_trip(tmp_path):
    body = """
    zeros = L(torch.zeros)(size=[2], dtype=torch.bfloat16)
    amp = dict(dtype=torch.float16, dtypes=[torch.float32, torch.bfloat16])
    acts = L(types.SimpleNamespace)(fn=torch.nn.functional.gelu, cls=nn.GELU, op=operator.add)
    status = dict(code=http.HTTPStatus.NOT_FOUND)
    """
    *built, text = round_trip(tmp_path, body)
    assert "_target_: torch.zeros\n" in text and "name: torch.float16" in text
    assert "name: http.HTTPStatus.NOT_FOUND" in text
    for cfg in built:
        assert cfg["zeros"].dtype is torch.bfloat16
        assert cfg["amp"] == {"dtype": torch.float16, "dtypes": [torch.float32, torch.bfloat16]}
        assert vars(cfg["acts"]) == {
            "fn": torch.nn.functional.gelu,
            "cls": nn.GELU,
            "op": __import__("operator").add,
        }
        assert cfg["status"]["code"] is http.HTTPStatus.NOT_FOUND


def test_a_value_yaml_cannot_hold_is_an_error_naming_its_key(tmp_path):
    body = """
    model = L(types.SimpleNamespace)(weight=dict(init=torch.ones(2)))
    """
    with pytest.raises(ConfigError, match=r"^model.weight.init: .*Tensor.*LazyCall"):
        round_trip(tmp_path, body)


def test_partial_keywords_are_overridable_and_a_missing_func_is_named(tmp_path):
    src = tmp_path / f"cfg_{uuid.uuid4().hex[:8]}.py"
    src.write_text(HEADER + "norm = dict(make=functools.partial(nn.BatchNorm2d, eps=1e-3))\n")
    cfg = LazyConfig.apply_overrides(LazyConfig.load(str(src)), ["norm.make.eps=0.01"])
    assert instantiate(cfg.norm.make)(4).eps == 0.01
    del cfg.norm.make.func
    with pytest.raises(ConfigError, match="^norm.make: functools.partial needs 'func'"):
        instantiate(cfg.norm.make, "norm.make")
