"""Transfer without chosen keys: train.init_checkpoint_exclude leaves a same-shape head out.

Observed: a checkpoint's head of the same shape could not be left out on transfer (only keys of
another shape were skipped), so a `fresh` rule then matched nothing.
"""

import pytest
import torch

from pgtrain.checkpoint import Checkpointer
from pgtrain.config import LazyConfig
from pgtrain.engine import build_run
from pgtrain.errors import ConfigError
from pgtrain.modeling import MLPClassifier
from pgtrain.param_groups import build_param_groups
from tests._repo_configs import TOY


def saved_toy(tmp_path):
    torch.manual_seed(1)
    model = MLPClassifier(in_dim=16, hidden_dim=64, depth=2, num_classes=4)
    path = tmp_path / "pretrained.pth"
    torch.save({"model": model.state_dict()}, path)
    return model, path


def test_excluded_keys_keep_their_initialization_and_count_as_fresh(tmp_path):
    source, path = saved_toy(tmp_path)
    torch.manual_seed(2)
    model = MLPClassifier(in_dim=16, hidden_dim=64, depth=2, num_classes=4)
    head_before = model.head.weight.detach().clone()
    report = Checkpointer(model).resume_or_load(str(path), resume=False, exclude=["head.*"])
    assert report.excluded == ["head.weight", "head.bias"]
    assert report.fresh == ["head.weight", "head.bias"]
    assert report.missing == []  # left out on purpose, not missing
    assert torch.equal(model.head.weight, head_before)  # kept its own initialization
    for name, p in model.named_parameters():
        if not name.startswith("head."):
            assert torch.equal(p, dict(source.named_parameters())[name]), name
    assert "left out (init_checkpoint_exclude) (2): head.weight, head.bias" in report.summary()


def test_a_glob_that_matches_no_key_is_an_error_naming_close_keys(tmp_path):
    _, path = saved_toy(tmp_path)
    model = MLPClassifier(in_dim=16, hidden_dim=64, depth=2, num_classes=4)
    with pytest.raises(ConfigError, match=r"init_checkpoint_exclude: 'haed\.\*' matches no key"):
        Checkpointer(model).resume_or_load(str(path), resume=False, exclude=["haed.*"])


def test_the_run_puts_the_excluded_head_in_the_fresh_group(tmp_path):
    _, path = saved_toy(tmp_path)
    cfg = LazyConfig.apply_overrides(
        LazyConfig.load(TOY),
        [
            f"train.init_checkpoint={path}",
            "train.init_checkpoint_exclude=[head.*]",  # as typed on a command line
            "optimizer.params.rules=[{fresh: true, lr_mult: 10, group: new}]",
            f"train.output_dir={tmp_path / 'out'}",
        ],
    )
    run = build_run(cfg)
    groups = {g["name"]: g for g in run.groups}
    assert groups["new"]["param_names"] == ["head.weight", "head.bias"]
    assert groups["new"]["lr"] == pytest.approx(10 * groups["default"]["lr"])
    # Without the exclusion the same checkpoint provides the head, and the rule matches nothing.
    cfg.train.init_checkpoint_exclude = []
    assert [g["name"] for g in build_run(cfg).groups] == ["default"]


class TiedLM(torch.nn.Module):
    """An output layer that shares its weight with the embedding (GPT-2, T5, ...)."""

    def __init__(self):
        super().__init__()
        self.embed = torch.nn.Embedding(10, 4)
        self.body = torch.nn.Linear(4, 4)
        self.head = torch.nn.Linear(4, 10)
        self.head.weight = self.embed.weight


def saved_tied(tmp_path, drop=None):
    torch.manual_seed(1)
    state = TiedLM().state_dict()  # both names of the shared tensor, as torch writes them
    state = {k: v for k, v in state.items() if k != drop}  # some exporters write one name only
    path = tmp_path / f"tied_without_{drop}.pth"
    torch.save({"model": state}, path)
    return state, path


@pytest.mark.parametrize("drop", [None, "head.weight"])
def test_excluding_one_name_of_a_tied_weight_that_loads_through_the_other_is_refused(
    tmp_path, drop
):
    """Observed: the shared tensor loaded through 'embed.weight' while the report listed
    'head.weight' as left out, so a `fresh` rule gave the head nothing extra."""
    _, path = saved_tied(tmp_path, drop)
    torch.manual_seed(2)
    model = TiedLM()
    before = model.embed.weight.detach().clone()
    with pytest.raises(ConfigError) as error:
        Checkpointer(model).resume_or_load(str(path), resume=False, exclude=["body.*", "head.*"])
    message = str(error.value)
    assert "\n" not in message
    assert "'head.*' covers 'head.weight'" in message and "'embed.weight'" in message
    assert "tied" in message and "add 'embed.weight'" in message
    assert torch.equal(model.embed.weight, before)  # refused before anything loaded


def test_excluding_every_name_of_a_tied_weight_starts_it_fresh(tmp_path):
    state, path = saved_tied(tmp_path)
    torch.manual_seed(2)
    model = TiedLM()
    before = model.embed.weight.detach().clone()
    report = Checkpointer(model).resume_or_load(
        str(path), resume=False, exclude=["head.*", "embed.weight"]
    )
    assert torch.equal(model.embed.weight, before) and model.head.weight is model.embed.weight
    assert torch.equal(model.body.weight, state["body.weight"])
    assert report.fresh == ["embed.weight", "head.bias"] and report.missing == []


def test_a_tied_weight_whose_only_name_in_the_file_is_excluded_is_fresh_not_missing(
    tmp_path, caplog
):
    """A file that holds only 'head.weight': leaving it out leaves the shared tensor without a
    source, which the report says (fresh, tied), rather than calling 'embed.weight' missing."""
    _, path = saved_tied(tmp_path, drop="embed.weight")
    torch.manual_seed(2)
    model = TiedLM()
    before = model.embed.weight.detach().clone()
    report = Checkpointer(model).resume_or_load(str(path), resume=False, exclude=["head.*"])
    assert torch.equal(model.embed.weight, before)
    assert report.excluded == ["head.weight", "head.bias"]
    assert report.fresh == ["embed.weight", "head.bias"] and report.missing == []
    assert "Left out 'head.weight' (tied: embed.weight): the shared tensor is fresh" in caplog.text


def test_a_fresh_rule_gives_the_tied_weight_its_multiplier_once_it_starts_fresh(tmp_path):
    _, path = saved_tied(tmp_path)
    model = TiedLM()
    report = Checkpointer(model).resume_or_load(
        str(path), resume=False, exclude=["head.*", "embed.weight"]
    )
    rules = [dict(fresh=True, lr_mult=10.0, group="new")]
    groups = build_param_groups(
        model, builder="rules", lr=0.1, weight_decay=0.0, rules=rules, fresh=report.fresh
    )
    new = next(g for g in groups if g["name"] == "new")
    assert new["param_names"] == ["embed.weight", "head.bias"]  # the shared tensor, placed once
    assert new["lr"] == pytest.approx(1.0)
