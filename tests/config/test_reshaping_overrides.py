"""Overrides that reshape a config: `~key` removes a key, lists and dicts parse or fail loudly.

Observed: switching SGD to AdamW from the command line failed on 'momentum' (no way to remove
it), and ``skip=[pos_embed]`` silently became the string '[pos_embed]'.
"""

import pytest
import torch

from pgtrain.config import LazyConfig, instantiate
from pgtrain.errors import ConfigError
from tests._repo_configs import TOY


def toy():
    return LazyConfig.load(TOY)


def test_switching_the_optimizer_class_removes_its_own_options():
    cfg = toy()
    assert "momentum" in cfg.optimizer  # SGD's option, which AdamW does not take
    LazyConfig.apply_overrides(cfg, ["optimizer._target_=torch.optim.AdamW", "~optimizer.momentum"])
    assert "momentum" not in cfg.optimizer
    cfg.optimizer.params.model = instantiate(cfg.model)
    optimizer = instantiate(cfg.optimizer)
    assert isinstance(optimizer, torch.optim.AdamW)


def test_switching_the_schedule_removes_its_own_options():
    cfg = toy()
    assert cfg.lr_scheduler.schedule.name == "multistep"
    LazyConfig.apply_overrides(
        cfg,
        [
            "lr_scheduler.schedule.name=cosine",
            "~lr_scheduler.schedule.milestones",
            "~lr_scheduler.schedule.gamma",
        ],
    )
    assert "milestones" not in cfg.lr_scheduler.schedule
    cfg.optimizer.params.model = instantiate(cfg.model)
    cfg.lr_scheduler.optimizer = instantiate(cfg.optimizer)
    scheduler = instantiate(cfg.lr_scheduler)
    ends = scheduler.lrs_at(cfg.train.max_iter - 1)[0] / scheduler.base_lrs[0]
    assert ends < 1e-3  # a cosine decays to ~0 at the end (the multistep ended at 0.01)


def test_a_removed_key_and_a_switched_class_round_trip_through_config_yaml(tmp_path):
    cfg = toy()
    LazyConfig.apply_overrides(cfg, ["optimizer._target_=torch.optim.AdamW", "~optimizer.momentum"])
    LazyConfig.save(cfg, str(tmp_path / "config.yaml"))
    back = LazyConfig.load(str(tmp_path / "config.yaml"))
    assert LazyConfig.to_yaml(back) == LazyConfig.to_yaml(cfg)
    assert "momentum" not in back.optimizer
    assert back.optimizer._target_ == "torch.optim.AdamW"


@pytest.mark.parametrize(
    "override, match",
    [
        ("~optimizer.momentom", r"'~optimizer.momentom': optimizer has no key 'momentom'; did you"),
        ("~optimizer.momentum=0.9", r"'~optimizer.momentum=0.9': ~ removes a key; write"),
        ("~", r"override '~' names no key"),
    ],
)
def test_removing_what_is_not_there_is_an_error(override, match):
    with pytest.raises(ConfigError, match=match):
        LazyConfig.apply_overrides(toy(), [override])


def test_an_unquoted_list_of_names_is_a_list():
    cfg = toy()
    LazyConfig.apply_overrides(
        cfg,
        [
            "+train.names=[pos_embed, cls_token]",
            "+train.one=[pos_embed]",
            "+train.globs=[head.*]",
            "+train.numbers=[0.5,0.8]",
            "+train.empty=[]",
        ],
    )
    assert list(cfg.train.names) == ["pos_embed", "cls_token"]
    assert list(cfg.train.one) == ["pos_embed"]
    assert list(cfg.train.globs) == ["head.*"]
    assert list(cfg.train.numbers) == [0.5, 0.8]
    assert list(cfg.train.empty) == []


def test_a_list_of_rules_parses_unquoted_inside():
    cfg = toy()
    rules = "[{match: head.*, lr_mult: 10}, {module: norm, weight_decay: 0}]"
    LazyConfig.apply_overrides(cfg, [f"optimizer.params.rules={rules}"])
    rules = [dict(r) for r in cfg.optimizer.params.rules]
    assert rules == [
        {"match": "head.*", "lr_mult": 10},
        {"module": "norm", "weight_decay": 0},
    ]


@pytest.mark.parametrize("raw", ["[pos_embed", "{match: head.*", "[a, [b]", "{a: b: c}"])
def test_a_list_or_dict_that_does_not_parse_says_how_to_quote_it(raw):
    with pytest.raises(ConfigError, match=r"looks like a list or dict but does not parse.*quote"):
        LazyConfig.apply_overrides(toy(), [f"+train.x={raw}"])


def test_plain_strings_and_numbers_are_unchanged():
    cfg = toy()
    LazyConfig.apply_overrides(
        cfg, ["train.output_dir=/tmp/x", "optimizer.lr=1e-3", "+train.word=none_of_these"]
    )
    assert cfg.train.output_dir == "/tmp/x" and cfg.optimizer.lr == 1e-3
    assert cfg.train.word == "none_of_these"
