"""Resume: an interrupted run continued from its checkpoint equals an unbroken run, bit for bit."""

import pytest
import torch

from pgtrain.checkpoint import Checkpointer
from pgtrain.data import ToyClassificationDataset, build_train_loader
from pgtrain.engine import HookBase, IterationTimer, LRSchedulerHook, PeriodicCheckpointer, Trainer
from pgtrain.modeling import MLPClassifier
from pgtrain.solver import LRMultiplier, build_schedule


class Interrupt(HookBase):
    def __init__(self, at):
        self.at = at

    def before_step(self):
        if self.trainer.iter == self.at:
            raise KeyboardInterrupt


def run(out_dir, max_iter=10, interrupt_at=None, resume=False):
    torch.manual_seed(0)
    model = MLPClassifier(in_dim=8, hidden_dim=16, depth=2, num_classes=3, dropout=0.2)
    dataset = ToyClassificationDataset(num_samples=40, dim=8, num_classes=3, seed=0)
    loader = build_train_loader(dataset, total_batch_size=8, seed=0)  # 5 batches an epoch
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.01, weight_decay=0.05)
    trainer = Trainer(model, loader, optimizer, accumulation=2)
    schedule = build_schedule(name="cosine", warmup_length=0.2)
    scheduler = LRMultiplier(optimizer, schedule, max_iter)
    checkpointer = Checkpointer(model, str(out_dir), trainer=trainer)
    trainer.register_hooks(
        [
            IterationTimer(),
            LRSchedulerHook(scheduler),
            PeriodicCheckpointer(checkpointer, period=5, max_iter=max_iter),
            Interrupt(interrupt_at) if interrupt_at is not None else None,
        ]
    )
    start = 0
    if resume:
        start = checkpointer.resume_or_load("", resume=True).extra["iteration"] + 1
    trainer.train(start, max_iter)
    return model, optimizer, scheduler


def test_interrupted_and_resumed_run_equals_unbroken_run(tmp_path):
    model_a, opt_a, sched_a = run(tmp_path / "a")
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "b", interrupt_at=7)  # last checkpoint: iteration 4
    model_b, opt_b, sched_b = run(tmp_path / "b", resume=True)
    for (name, a), b in zip(
        model_a.state_dict().items(), model_b.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b), name
    state_a, state_b = opt_a.state_dict(), opt_b.state_dict()
    for i, s in state_a["state"].items():
        for key, value in s.items():
            assert torch.equal(value, state_b["state"][i][key]), (i, key)
    assert [g["lr"] for g in opt_a.param_groups] == [g["lr"] for g in opt_b.param_groups]
    assert sched_a.last_epoch == sched_b.last_epoch == 10
