import copy
import math

import pytest
import torch

from pgtrain.data import build_train_loader
from pgtrain.engine import AMPTrainer, HookBase, NonFiniteLossGuard, Trainer


class Recorder(HookBase):
    def __init__(self, tag, log):
        self.tag, self.log = tag, log

    def before_train(self):
        self.log.append((self.tag, "before_train", self.trainer.iter))

    def before_step(self):
        self.log.append((self.tag, "before_step", self.trainer.iter))

    def after_backward(self):
        self.log.append((self.tag, "after_backward", self.trainer.iter))

    def after_step(self):
        self.log.append((self.tag, "after_step", self.trainer.iter))

    def after_train(self):
        self.log.append((self.tag, "after_train", self.trainer.iter))


def make_trainer(model, dataset, batch=8, accumulation=1, clip=None, lr=0.1, cls=Trainer, **kw):
    loader = build_train_loader(dataset, total_batch_size=batch, seed=0)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    return cls(model, loader, opt, accumulation=accumulation, clip_grad_norm=clip, **kw)


def test_runs_n_iterations_and_hooks_fire_in_list_order(toy_model, toy_dataset):
    log = []
    trainer = make_trainer(toy_model, toy_dataset)
    trainer.register_hooks([Recorder("a", log), None, Recorder("b", log)])
    trainer.train(0, 3)
    stages = [(tag, stage) for tag, stage, _ in log]
    per_step = [
        ("a", "before_step"),
        ("b", "before_step"),
        ("a", "after_backward"),
        ("b", "after_backward"),
        ("a", "after_step"),
        ("b", "after_step"),
    ]
    assert stages == [("a", "before_train"), ("b", "before_train")] + per_step * 3 + [
        ("a", "after_train"),
        ("b", "after_train"),
    ]
    assert [it for tag, stage, it in log if stage == "after_step" and tag == "a"] == [0, 1, 2]
    assert trainer.iter == 3
    assert trainer.storage.history("total_loss").values()[-1][1] == 2
    assert len(trainer.storage.history("loss_cls").values()) == 3


def test_training_lowers_the_loss(toy_model, toy_dataset):
    trainer = make_trainer(toy_model, toy_dataset)
    trainer.train(0, 30)
    losses = [v for v, _ in trainer.storage.history("total_loss").values()]
    assert sum(losses[-5:]) / 5 < 0.5 * sum(losses[:5]) / 5


def test_accumulation_equals_one_big_batch(toy_model, toy_dataset):
    # 2 micro-batches of 4 = one batch of 8 (the model has no batch-dependent layers).
    big = copy.deepcopy(toy_model)
    make_trainer(big, toy_dataset, batch=8).train(0, 3)
    small = copy.deepcopy(toy_model)
    make_trainer(small, toy_dataset, batch=4, accumulation=2).train(0, 3)
    for (name, a), b in zip(big.named_parameters(), small.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=name)
    # ...and differs from taking only one micro-batch of 4.
    single = copy.deepcopy(toy_model)
    make_trainer(single, toy_dataset, batch=4).train(0, 3)
    assert not torch.allclose(single.head.weight, big.head.weight)


def test_clipping_bounds_the_gradient_norm(toy_model, toy_dataset):
    class GradNorm(HookBase):
        norms = []

        def after_backward(self):
            grads = [p.grad for p in self.trainer.model.parameters()]
            self.norms.append(
                torch.linalg.vector_norm(
                    torch.stack([torch.linalg.vector_norm(g) for g in grads])
                ).item()
            )

    trainer = make_trainer(toy_model, toy_dataset, clip=0.01)
    trainer.register_hooks([GradNorm()])
    trainer.train(0, 3)
    assert all(n <= 0.01 * (1 + 1e-4) for n in GradNorm.norms)
    recorded = [v for v, _ in trainer.storage.history("grad_norm").values()]
    assert all(v > 0.01 for v in recorded)  # the pre-clip norms were larger: clipping acted


def test_bf16_autocast_on_cpu(toy_model, toy_dataset):
    seen = []

    def spy(module, inputs, output):
        seen.append(output.dtype)

    toy_model.head.register_forward_hook(spy)
    trainer = make_trainer(toy_model, toy_dataset, cls=AMPTrainer, precision="bf16")
    trainer.train(0, 2)
    assert seen == [torch.bfloat16, torch.bfloat16]
    assert toy_model.head.weight.dtype == torch.float32  # master weights stay fp32
    assert math.isfinite(trainer.storage.history("total_loss").latest())


def test_fp16_needs_cuda(toy_model, toy_dataset):
    with pytest.raises(ValueError, match="fp16 needs CUDA"):
        make_trainer(toy_model, toy_dataset, cls=AMPTrainer, precision="fp16")


def test_nan_loss_stops_with_iteration_before_the_step(toy_model, toy_dataset):
    class Poison(HookBase):
        def before_step(self):
            if self.trainer.iter == 2:
                with torch.no_grad():
                    self.trainer.model.stem.bias[0] = float("nan")

    trainer = make_trainer(toy_model, toy_dataset)
    trainer.register_hooks([Poison(), NonFiniteLossGuard()])
    # the 3rd iteration (index 2), counted as the console counts
    with pytest.raises(FloatingPointError, match="non-finite at iteration 3"):
        trainer.train(0, 5)
    # The optimizer never stepped on NaN gradients: only the poisoned entry is NaN.
    assert torch.isfinite(toy_model.head.weight).all()
    assert torch.isnan(toy_model.stem.bias).sum() == 1


def test_model_must_return_a_loss_dict(toy_dataset):
    class Bad(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))

        def forward(self, batch):
            return self.w.sum()

    with pytest.raises(TypeError, match="dict of scalar losses"):
        make_trainer(Bad(), toy_dataset).train(0, 1)


def test_nan_loss_never_reaches_a_checkpoint(toy_model, toy_dataset, tmp_path):
    from pgtrain.checkpoint import Checkpointer
    from pgtrain.engine import PeriodicCheckpointer

    class Poison(HookBase):
        def before_step(self):
            if self.trainer.iter == 3:
                with torch.no_grad():
                    self.trainer.model.stem.weight.mul_(float("inf"))

    trainer = make_trainer(toy_model, toy_dataset)
    checkpointer = Checkpointer(toy_model, str(tmp_path), trainer=trainer)
    trainer.register_hooks(
        [Poison(), NonFiniteLossGuard(), PeriodicCheckpointer(checkpointer, period=1)]
    )
    with pytest.raises(FloatingPointError, match="iteration 4"):
        trainer.train(0, 10)
    saved = sorted(p.name for p in tmp_path.glob("*.pth"))  # named by iterations done
    assert saved == ["model_0000001.pth", "model_0000002.pth", "model_0000003.pth"]
    for name in saved:
        state = torch.load(tmp_path / name, weights_only=True)["model"]
        assert all(torch.isfinite(v).all() for v in state.values()), name
    assert checkpointer.get_checkpoint_file().endswith("model_0000003.pth")
