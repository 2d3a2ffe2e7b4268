"""A config's own hooks (top-level ``hooks``): trained with the built-in ones, state saved."""

import json

import pytest

from pgtrain.config import LazyCall as L
from pgtrain.engine import HookBase, build_run, config_hooks, default_hooks
from pgtrain.errors import ConfigError
from tests._repo_configs import toy_run


class CountSteps(HookBase):
    """Counts steps and writes the count as a metric; its count is saved with checkpoints."""

    def __init__(self, every: int = 1):
        self.every, self.steps = every, 0

    def after_step(self):
        self.steps += 1
        if self.steps % self.every == 0:
            self.trainer.storage.put_scalar("counted_steps", self.steps, smoothing_hint=False)

    def state_dict(self):
        return {"steps": self.steps}

    def load_state_dict(self, state):
        self.steps = state["steps"]


class NotAHook:
    def __init__(self, every: int = 1):
        self.every = every


def test_the_configs_hooks_run_after_the_state_changing_ones_and_before_the_writer(tmp_path):
    cfg = toy_run(tmp_path)
    cfg.hooks = [L(CountSteps)(every=5)]
    run = build_run(cfg, with_loader=True)
    hooks = [h for h in default_hooks(run) if h is not None]
    names = [type(h).__name__ for h in hooks]
    assert names.index("CountSteps") > names.index("LRSchedulerHook")
    assert names.index("CountSteps") < names.index("PeriodicCheckpointer")
    assert names[-1] == "PeriodicWriter"  # last: the hook's metrics are written the same step


def test_train_net_trains_the_configs_hook_and_resumes_its_state(tmp_path):
    from tools import train_net

    cfg = toy_run(tmp_path, "train.max_iter=10", "train.checkpoint.period=5")
    cfg.hooks = [L(CountSteps)(every=5)]
    train_net.do_train(cfg, resume=False)
    rows = [json.loads(line) for line in (tmp_path / "metrics.json").read_text().splitlines()]
    assert [r["counted_steps"] for r in rows if "counted_steps" in r] == [5, 10]
    cfg = toy_run(tmp_path, "train.max_iter=15", "train.checkpoint.period=5")
    cfg.hooks = [L(CountSteps)(every=5)]
    train_net.do_train(cfg, resume=True)
    rows = [json.loads(line) for line in (tmp_path / "metrics.json").read_text().splitlines()]
    assert [r["counted_steps"] for r in rows if "counted_steps" in r][-1] == 15  # 10 restored


def test_an_entry_that_is_no_hook_is_one_line_naming_it(tmp_path):
    cfg = toy_run(tmp_path)
    cfg.hooks = [L(CountSteps)(), L(NotAHook)(every=1)]
    with pytest.raises(ConfigError, match=r"hooks\.1: NotAHook is not a hook; give a subclass of"):
        config_hooks(cfg)
    cfg.hooks = {"a": 1}
    with pytest.raises(ConfigError, match="hooks: .* must be a list of hooks"):
        config_hooks(cfg)


@pytest.mark.parametrize(
    ("hooks", "message"),
    [
        ([L(NotAHook)(every=1)], r"hooks\.0: NotAHook is not a hook; give a subclass of"),
        ([L(CountSteps)(), CountSteps], r"hooks\.1: CountSteps is not a hook call; give L\("),
        (["CountSteps"], r"hooks\.0: 'CountSteps' is not a hook call"),
        ({"count": L(CountSteps)()}, r"hooks: .* must be a list of hooks"),
    ],
)
def test_bad_hooks_are_refused_with_the_settings_before_anything_is_built(
    tmp_path, hooks, message
):
    from pgtrain.engine import check_run_config

    cfg = toy_run(tmp_path)
    cfg.hooks = hooks
    with pytest.raises(ConfigError, match=message):
        check_run_config(cfg)
    assert not tmp_path.exists() or not any(tmp_path.iterdir())  # no folder, no file written
