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
