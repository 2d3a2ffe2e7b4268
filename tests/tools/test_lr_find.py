"""The LR range test keeps the groups' ratios: one factor on every group's configured LR, a
stop at divergence, a suggestion with its rule, the group that blew up first; it writes only
into its own folder."""

import json
import math

import pytest

from pgtrain.engine import HookBase, ParamGroupStatsHook, Trainer, build_run
from pgtrain.engine.hooks.lr_sweep import LRSweepHook
from pgtrain.errors import ConfigError
from pgtrain.solver.lr_range import analyse_range, sweep_factors
from tests._loggers import loggers_restored
from tests._repo_configs import toy_run
from tools import lr_find


class RecordLRs(HookBase):
    def __init__(self):
        self.lrs = []

    def before_step(self):
        self.lrs.append({g["name"]: g["lr"] for g in self.trainer.optimizer.param_groups})


def test_every_group_keeps_its_multiple_and_the_sweep_stops_at_divergence(tmp_path):
    run = build_run(toy_run(tmp_path), with_loader=True)
    factors = sweep_factors(1e-3, 1e4, 60)  # ends far past what the toy MLP takes
    sweep, lrs = LRSweepHook(factors), RecordLRs()
    trainer = Trainer(run.model, run.loader, run.optimizer)
    trainer.register_hooks([ParamGroupStatsHook(1), sweep, lrs])
    trainer.train(0, len(factors))
    done = len(sweep.losses)
    assert 10 < done < len(factors)  # stopped on divergence, not at the end
    for factor, step in zip(factors, lrs.lrs, strict=False):
        assert step["default"] == pytest.approx(0.005 * factor)
        assert step["head"] == pytest.approx(10 * step["default"])  # the head's 10x kept
    assert set(sweep.grad_norms) == {"default", "head"}
    assert all(len(norms) == done for norms in sweep.grad_norms.values())


def test_the_analysis_finds_divergence_the_suggestion_and_the_first_group_to_blow_up():
    lrs = sweep_factors(1e-4, 1.0, 50)
    losses = [2.0 - 1.5 * i / 30 for i in range(30)] + [0.5 * 1.6**k for k in range(20)]
    norms = {"backbone": [1.0] * 40 + [50.0] * 10, "head": [1.0] * 35 + [50.0] * 15}
    result = analyse_range(lrs, losses, norms)
    assert result.diverged_at is not None and result.diverged_at > 30
    lowest = min(range(result.diverged_at), key=result.smooth.__getitem__)
    assert result.suggestion == pytest.approx(lrs[lowest] / 10) and "a tenth" in result.rule
    assert lrs[3] <= result.steepest < lrs[lowest]
    assert result.blew_up == ("head", 35)
    # A loss that turns NaN diverges where it does; nothing finite: no suggestion.
    assert analyse_range(lrs[:5], [1.0, 0.9, math.nan, 1.0, 1.0], {}).diverged_at == 2
    nothing = analyse_range(lrs[:2], [math.nan, math.nan], {})
    assert nothing.suggestion is None and "no finite loss" in nothing.rule
    with pytest.raises(ConfigError, match="the sweep must go up from a positive LR: got 1 -> 0.1"):
        sweep_factors(1.0, 0.1, 10)


def test_the_tool_reports_and_writes_only_its_own_folder(tmp_path, capsys):
    run_dir, out = tmp_path / "run", tmp_path / "finder"
    with loggers_restored():
        lines = lr_find.main(
            [
                "--config",
                "configs/quick/toy.py",
                "--output-dir",
                str(out),
                "--iters",
                "80",
                f"train.output_dir={run_dir}",
                "train.device=cpu",
            ]
        )
    assert lines[0].startswith("swept base lr 5e-06 -> ")
    assert "(every group at its configured multiple: default x1, head x10)" in lines[0]
    assert any(line.startswith("suggested base lr: ") for line in lines)
    assert any("configured: 0.005 (optimizer.lr)" in line for line in lines)
    assert sorted(p.name for p in out.iterdir()) == ["lr_find.json", "lr_find.png"]
    assert not run_dir.exists()  # no checkpoint, config or log in the run's folder
    report = json.loads((out / "lr_find.json").read_text())
    assert report["group_multiples"] == {"default": 1.0, "head": 10.0}
    assert report["suggested_base_lr"] > 0 and report["configured_base_lr"] == 0.005
    with pytest.raises(ConfigError, match="the sweep must go up from a positive LR: got 1 -> 0.1"):
        lr_find.main(["--config", "configs/quick/toy.py", "--min-lr", "1", "--max-lr", "0.1"])
