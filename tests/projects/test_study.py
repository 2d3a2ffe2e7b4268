"""projects/study.py: the study scripts read their tables back from the runs' metrics.json."""

import json

import pytest

from projects.study import final_metrics, median_step_time


def write_metrics(folder, records):
    folder.mkdir()
    (folder / "metrics.json").write_text("".join(json.dumps(r) + "\n" for r in records))
    return str(folder)


def test_the_last_evaluation_and_the_median_step_time(tmp_path):
    run = write_metrics(
        tmp_path / "run",
        [
            {"iteration": 19, "time": 0.5, "total_loss": 2.0},
            {"iteration": 99, "top1": 80.0},
            {"iteration": 119, "time": 0.7, "total_loss": 1.0},
            {"iteration": 139, "time": 0.4},
            {"iteration": 199, "top1": 90.0, "ema/top1": 91.0},
        ],
    )
    assert final_metrics(run, "top1")["top1"] == 90.0
    assert final_metrics(run, "ema/top1")["iteration"] == 199
    assert median_step_time(run) == 0.5


def test_a_run_without_the_records_is_named(tmp_path):
    run = write_metrics(tmp_path / "run", [{"iteration": 19, "total_loss": 2.0}])
    with pytest.raises(RuntimeError, match=r"run/metrics.json has no record with 'segm/AP'"):
        final_metrics(run)
    with pytest.raises(RuntimeError, match="has no 'time' record"):
        median_step_time(run)
    with pytest.raises(FileNotFoundError, match="did the run in .*missing train"):
        final_metrics(str(tmp_path / "missing"))


def test_the_unfreezing_study_splits_the_step_times_at_the_epoch(tmp_path):
    from projects.maskrcnn.unfreeze_study import row
    from projects.study import markdown_table, write_results

    run = write_metrics(
        tmp_path / "unfreeze",
        [
            {"iteration": 20, "time": 0.2, "total_loss": 1.5},
            {"iteration": 40, "time": 0.3, "total_loss": 1.0},
            {"iteration": 60, "time": 0.5, "total_loss": 0.8},
            {"iteration": 80, "time": 0.6, "total_loss": 0.7},
            {"iteration": 80, "segm/AP": 0.6131, "bbox/AP": 0.7369},
        ],
    )
    line = row("unfreeze", run, epoch=40)
    assert line == "| unfreeze | 0.613 | 0.737 | 0.700 | 0.250 | 0.550 |"
    write_results(str(tmp_path / "out"), markdown_table(["run", "a", "b", "c", "d", "e"], [line]))
    text = (tmp_path / "out" / "results.md").read_text()
    assert text == f"| run | a | b | c | d | e |\n|---|---|---|---|---|---|\n{line}\n"


def test_every_unfreezing_study_variant_is_a_valid_run(tmp_path):
    from pgtrain.config import LazyConfig
    from pgtrain.engine.run.settings import check_run_config
    from projects.maskrcnn.unfreeze_study import FINETUNE_CONFIG, variants

    for name, overrides in variants(400, 150, 50).items():
        cfg = LazyConfig.apply_overrides(LazyConfig.load(FINETUNE_CONFIG), overrides)
        check_run_config(cfg)  # raises on a wrong key or value
        if name == "unfreeze":
            assert cfg.train.unfreeze.stages[0].at == "1ep"
