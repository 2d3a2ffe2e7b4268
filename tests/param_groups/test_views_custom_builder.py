"""A user's own builder: the table and `explain` derive scale and provenance from its groups."""

import os

from torch import nn

from pgtrain.config import LazyConfig
from pgtrain.engine import build_run
from pgtrain.param_groups import PARAM_GROUP_BUILDERS

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@PARAM_GROUP_BUILDERS.register("test_views_five_x")
def five_x_head(model: nn.Module, *, lr: float, weight_decay: float = 0.0):
    """Plain dicts with only `lr` (no lr_scale, no provenance): the head at 5x."""
    body = [(n, p) for n, p in model.named_parameters() if not n.startswith("head.")]
    head = [(n, p) for n, p in model.named_parameters() if n.startswith("head.")]
    return [{"params": body}, {"params": head, "lr": 5 * lr, "name": "head"}]


def toy_run(*overrides):
    cfg = LazyConfig.load(os.path.join(ROOT, "configs", "quick", "toy.py"))
    LazyConfig.apply_overrides(
        cfg, ["optimizer.params.builder=test_views_five_x", "~optimizer.params.rules", *overrides]
    )
    return build_run(cfg, device="cpu")


def row(table, name):
    return next(line.split() for line in table.splitlines() if line.startswith(name + " "))


def test_the_table_shows_a_custom_builders_5x_as_5():
    run = toy_run()
    table = run.table()
    header = next(line.split("  ") for line in table.splitlines() if line.startswith("group"))
    columns = [c.strip() for c in header if c.strip()]
    scale = columns.index("lr scale")
    assert row(table, "head")[scale] == "5"
    assert row(table, "group0")[scale] == "1"
    assert "base lr 0.005" in table.splitlines()[0]


def test_the_scale_is_the_groups_own_lr_over_the_base_under_batch_scaling():
    run = toy_run("train.lr_scaling.reference_batch=16")  # factor 2 on every group
    table = run.table()
    assert "base lr 0.005" in table.splitlines()[0]
    header = [
        c for c in next(ln for ln in table.splitlines() if ln.startswith("group")).split("  ")
    ]
    columns = [c.strip() for c in header if c.strip()]
    assert row(table, "head")[columns.index("lr scale")] == "5"
    assert row(table, "head")[columns.index("lr")] == "0.05"  # 5 x 0.005 x 2


def test_explain_gives_the_true_base_and_names_the_builder():
    run = toy_run()
    text = run.groups.explain("head.weight")
    lr_line = next(line for line in text.splitlines() if line.strip().startswith("lr ="))
    assert "0.025" in lr_line and "base 0.005" in lr_line and "(base)" not in lr_line
    assert "set by builder 'test_views_five_x'" in lr_line
    assert "5 x base 0.005" in lr_line
    body = run.groups.explain("blocks.0.fc.weight")
    body_lr = next(line for line in body.splitlines() if line.strip().startswith("lr ="))
    assert body_lr.strip() == "lr = 0.005 (base 0.005)"
    assert "nan" not in body


def test_explain_of_the_rules_builder_is_unchanged():
    cfg = LazyConfig.load(os.path.join(ROOT, "configs", "quick", "toy.py"))
    run = build_run(cfg, device="cpu")
    text = run.groups.explain("head.bias")
    assert "  lr = 0.05 (base 0.005 x 10)" in text
    assert "set by builder" not in text
    assert row(run.table(), "head")[5] == "10"


def test_a_zero_base_shows_no_scale_rather_than_dividing_by_it():
    run = toy_run("optimizer.lr=0.0")
    table = run.table()
    header = next(ln for ln in table.splitlines() if ln.startswith("group")).split("  ")
    columns = [c.strip() for c in header if c.strip()]
    assert row(table, "head")[columns.index("lr scale")] == "-"


def test_explain_ends_at_the_lr_that_trains_under_batch_scaling():
    run = toy_run("train.lr_scaling.reference_batch=16")  # factor 2, as the table applies
    text = run.groups.explain("head.weight", lr_factor=run.scheduler.lr_factor)
    assert (
        "  lr that trains = 0.05 (x batch-size LR factor 2, train.lr_scaling; the schedule "
        "multiplies it per iteration)" in text.splitlines()
    )
    assert "lr that trains" not in toy_run().groups.explain("head.weight", lr_factor=1.0)
