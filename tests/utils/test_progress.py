"""Progress lines on long waits: data generation, evaluation (and the form training uses)."""

import logging

import pytest
import torch
from torch import nn

from pgtrain.data.shapes import ensure_shapes
from pgtrain.evaluation import DatasetEvaluator, inference_on_dataset
from pgtrain.utils import progress as progress_module
from pgtrain.utils.progress import Progress


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch):
    fake = _Clock()
    monkeypatch.setattr(progress_module.time, "perf_counter", fake)
    return fake


def test_lines_come_every_interval_with_a_bar_and_eta(clock, caplog):
    log = logging.getLogger("pgtrain.test_progress")
    with caplog.at_level(logging.INFO, logger=log.name):
        with Progress("Inference", 10, log, unit="batch", interval=5.0) as progress:
            for _ in range(10):
                clock.now += 2.0  # 2 s a batch: a line every third batch
                progress.update()
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0].startswith("Inference 3/10 |") and " 30%" in lines[0]
    assert "eta 0:00:14" in lines[0] and "2 s/batch" in lines[0]
    assert [line.split()[1] for line in lines[:-1]] == ["3/10", "6/10", "9/10"]
    assert lines[-1] == "Inference: 10 batches in 20.00 s"


def test_unknown_total_counts_without_a_bar(clock, caplog):
    log = logging.getLogger("pgtrain.test_progress")
    with caplog.at_level(logging.INFO, logger=log.name):
        progress = Progress("Reading", None, log, unit="image", interval=1.0)
        clock.now += 3.0
        progress.update(6)
    assert caplog.records[0].getMessage() == "Reading 6 images  0.5 s/image"


def test_an_error_inside_logs_no_final_line(clock, caplog):
    log = logging.getLogger("pgtrain.test_progress")
    with caplog.at_level(logging.INFO, logger=log.name), pytest.raises(ValueError):
        with Progress("Inference", 4, log) as progress:
            progress.update()
            raise ValueError("boom")
    assert not caplog.records


def test_data_generation_shows_progress(tmp_path, caplog, monkeypatch):
    # Every update logs (interval 0): the generation's images are all counted.
    monkeypatch.setattr(Progress.__init__, "__kwdefaults__", {"unit": "item", "interval": 0.0})
    with caplog.at_level(logging.INFO, logger="pgtrain.data.shapes"):
        ensure_shapes(str(tmp_path / "shapes"), num_train=3, num_val=2, image_size=64)
    lines = [r.getMessage() for r in caplog.records if r.name == "pgtrain.data.shapes"]
    assert lines[0].startswith("Generating the shapes dataset (10 images)")
    assert lines[1].startswith("Generating shapes 1/10 |") and lines[-2].startswith(
        "Generating shapes 10/10 |"
    )
    assert lines[-1].startswith("Generating shapes: 10 images in ")
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="pgtrain.data.shapes"):
        ensure_shapes(str(tmp_path / "shapes"), num_train=3, num_val=2, image_size=64)
    assert not caplog.records  # found, not generated again


class _Count(DatasetEvaluator):
    def reset(self) -> None:
        self.seen = 0

    def process(self, inputs, outputs) -> None:
        self.seen += len(outputs)

    def evaluate(self):
        return {"seen": self.seen}


def test_evaluation_shows_progress(caplog, monkeypatch):
    monkeypatch.setattr(Progress.__init__, "__kwdefaults__", {"unit": "item", "interval": 0.0})
    loader = [torch.zeros(2, 3) for _ in range(4)]
    with caplog.at_level(logging.INFO, logger="pgtrain.evaluation.evaluator"):
        result = inference_on_dataset(nn.Linear(3, 1), loader, _Count())
    assert result == {"seen": 8}
    lines = [r.getMessage() for r in caplog.records]
    assert [line.split()[1] for line in lines[:-1]] == ["1/4", "2/4", "3/4", "4/4"]
    assert lines[-1].startswith("Inference: 4 batches in ")
