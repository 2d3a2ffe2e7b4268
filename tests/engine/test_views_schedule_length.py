"""The schedule-length warning of a resume: only where positions move, in the run's units."""

import logging

import torch

from pgtrain.solver import LRMultiplier, build_schedule

SAVED = {"last_iter": 10, "max_iter": 10, "group_names": ["group0"], "base_lrs": [0.1]}


def scheduler(unit="fraction", max_iter=20):
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(2))], lr=0.1)
    milestones = [0.6] if unit == "fraction" else [5]
    schedule = build_schedule(
        name="multistep",
        milestones=milestones,
        gamma=0.1,
        unit=unit,
        max_iter=max_iter,
        iters_per_epoch=5,
    )
    return LRMultiplier(optimizer, schedule, max_iter)


def test_a_run_in_epochs_is_told_in_epochs(caplog):
    s = scheduler()
    s.describe_positions(["fraction"], 5, in_epochs=True)
    with caplog.at_level(logging.INFO):
        s.load_state_dict({**SAVED, "next_lrs": [0.001]})
    (record,) = [r for r in caplog.records if "Resumed" in r.getMessage()]
    text = record.getMessage()
    assert record.levelno == logging.WARNING
    assert text.startswith("Resumed after 2 epochs (10 iterations) with train.epochs 4")
    assert "give them in epochs (unit='epoch') or iterations (unit='iter')" in text


def test_positions_in_iterations_get_no_warning(caplog):
    s = scheduler(unit="iter")
    s.describe_positions(["iter"])
    with caplog.at_level(logging.INFO):
        s.load_state_dict({**SAVED, "next_lrs": [0.01]})
    (record,) = [r for r in caplog.records if "Resumed" in r.getMessage()]
    assert record.levelno == logging.INFO
    assert "unit=" not in record.getMessage()
    assert "given in iterations, so they stay where they were" in record.getMessage()


def test_a_changed_base_lr_is_not_the_length_warnings_business(caplog):
    s = scheduler()  # base 0.1; the checkpoint's base was 0.05, at the same multiplier x0.1
    with caplog.at_level(logging.INFO):
        s.load_state_dict({**SAVED, "base_lrs": [0.05], "next_lrs": [0.005]})
    text = next(r.getMessage() for r in caplog.records if "Resumed" in r.getMessage())
    assert "0.05" not in text and "0.005" not in text
    assert "x0.1 -> x1" in text  # the next iteration (11 of 20) is before the moved milestone
