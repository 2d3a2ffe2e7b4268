import math

import pytest
import torch

from pgtrain.data import build_train_loader
from pgtrain.engine import (
    BatchSizeLRScalingHook,
    HookBase,
    LRSchedulerHook,
    ParamGroupStatsHook,
    Trainer,
    loader_effective_batch,
)
from pgtrain.solver import BatchSizeLRScaling, LRMultiplier, build_schedule


def grouped_sgd(model, head_lr=1.0):
    head = [p for n, p in model.named_parameters() if n.startswith("head.")]
    rest = [p for n, p in model.named_parameters() if not n.startswith("head.")]
    return torch.optim.SGD(
        [
            {"params": rest, "lr": 0.01, "name": "backbone"},
            {"params": head, "lr": head_lr, "name": "head"},
        ],
        lr=0.01,
    )


def test_param_group_stats_match_a_hand_computation(toy_model, toy_dataset):
    class Snapshot(HookBase):
        """Records what the stats should be, computed independently."""

        expected = {}

        def after_backward(self):
            if self.trainer.iter != 3:
                return
            head = self.trainer.model.head
            self.w = [head.weight.detach().clone(), head.bias.detach().clone()]
            g = torch.cat([head.weight.grad.flatten(), head.bias.grad.flatten()])
            self.expected["grad"] = g.norm().item()
            self.expected["weight"] = torch.cat([w.flatten() for w in self.w]).norm().item()

        def after_step(self):
            if self.trainer.iter != 3:
                return
            head = self.trainer.model.head
            delta = torch.cat(
                [(head.weight - self.w[0]).flatten(), (head.bias - self.w[1]).flatten()]
            )
            self.expected["ratio"] = delta.norm().item() / self.expected["weight"]

    loader = build_train_loader(toy_dataset, total_batch_size=8)
    trainer = Trainer(toy_model, loader, grouped_sgd(toy_model))
    trainer.register_hooks([Snapshot(), ParamGroupStatsHook(period=2)])
    trainer.train(0, 4)
    storage = trainer.storage
    # Recorded at iterations 1 and 3 (every 2nd) only.
    assert [it for _, it in storage.history("grad_norm/head").values()] == [1, 3]
    assert storage.history("grad_norm/head").latest() == pytest.approx(Snapshot.expected["grad"])
    assert storage.history("weight_norm/head").latest() == pytest.approx(
        Snapshot.expected["weight"]
    )
    assert storage.history("update_ratio/head").latest() == pytest.approx(
        Snapshot.expected["ratio"]
    )
    # The head trains at 100x the LR: its update ratio is far larger than the backbone's.
    assert (
        storage.history("update_ratio/head").latest()
        > 10 * storage.history("update_ratio/backbone").latest()
    )


def test_dynamic_batch_scaling_sqrt_rule(toy_model, toy_dataset):
    """Seed 003: the batch goes 64 -> 128 under the sqrt rule: every group's LR x 1.414."""

    class GrowBatch(HookBase):
        def after_step(self):
            if self.trainer.iter == 1:
                self.trainer.data_loader.batch_sampler.batch_size = 128
                self.trainer._data_iter = iter(self.trainer.data_loader)

    loader = build_train_loader(toy_dataset, total_batch_size=64)
    optimizer = grouped_sgd(toy_model, head_lr=0.1)
    scheduler = LRMultiplier(optimizer, build_schedule(name="constant"), 10)
    trainer = Trainer(toy_model, loader, optimizer)
    trainer.register_hooks(
        [
            LRSchedulerHook(scheduler),
            GrowBatch(),
            BatchSizeLRScalingHook(BatchSizeLRScaling(scheduler, 64, "sqrt")),
        ]
    )
    trainer.train(0, 4)
    lrs = trainer.storage.history("lr/head").values()
    assert [it for _, it in lrs] == [0, 1, 2, 3]
    assert lrs[1][0] == pytest.approx(0.1) and lrs[3][0] == pytest.approx(0.1 * math.sqrt(2))
    assert trainer.storage.history("lr/backbone").latest() == pytest.approx(0.01 * math.sqrt(2))


def test_loader_effective_batch_counts_processes_and_accumulation(toy_model, toy_dataset):
    loader = build_train_loader(toy_dataset, total_batch_size=8)
    assert loader_effective_batch(loader, accumulation=4) == 32
    assert loader_effective_batch(loader) == 8
