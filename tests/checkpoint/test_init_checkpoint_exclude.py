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
