"""EMAHook: the average it keeps, its period and warmup, evaluation with the EMA weights, and a
resume that continues the average bit for bit."""

import json

import pytest
import torch
from torch import nn

from pgtrain.engine import EMAHook, Trainer
from pgtrain.errors import ConfigError
from tests._repo_configs import whole_and_resumed


class _Data:
    def __iter__(self):
        torch.manual_seed(1)
        while True:
            yield {"x": torch.randn(4, 3)}


class _Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(3, 2)
        self.bn = nn.BatchNorm1d(2)

    def forward(self, batch):
        return {"loss": self.bn(self.lin(batch["x"])).pow(2).mean()}


def trained(steps, **ema):
    torch.manual_seed(0)
    model = _Net()
    hook = EMAHook(**ema)
    trainer = Trainer(model, _Data(), torch.optim.SGD(model.parameters(), lr=0.1))
    history = []

    class Record(EMAHook.__base__):  # a plain hook after the EMA's: the weights of each step
        def after_step(self):
            history.append({k: v.detach().clone() for k, v in model.state_dict().items()})

    trainer.register_hooks([hook, Record()])
    trainer.train(0, steps)
    return model, hook, history


def test_the_average_follows_the_formula_with_warmup_and_period():
    _, hook, history = trained(6, decay=0.9, warmup=True, period=2)
    expected = None
    updates = 0
    for step, weights in enumerate(history):
        if (step + 1) % 2:
            continue
        if expected is None:
            expected = {k: v.clone() for k, v in weights.items()}  # the first update copies
        else:
            d = min(0.9, (1 + updates) / (10 + updates))
            for k, v in weights.items():
                if v.is_floating_point():
                    expected[k] = d * expected[k] + (1 - d) * v
                else:
                    expected[k] = v.clone()  # BatchNorm's counter
        updates += 1
    got = hook.model.state_dict()
    for key, value in expected.items():
        torch.testing.assert_close(got[key], value, rtol=0, atol=1e-7, msg=key)
    assert int(hook.averaged.n_averaged) == 3
    assert not any(p.requires_grad for p in hook.model.parameters())


class _DropNet(_Net):
    def forward(self, batch):  # dropout draws from the RNG the data draws from
        return {"loss": self.bn(nn.functional.dropout(self.lin(batch["x"]), 0.5)).pow(2).mean()}


def _trained_weights_and_rng(with_ema):
    torch.manual_seed(0)
    model = _DropNet()
    trainer = Trainer(model, _Data(), torch.optim.SGD(model.parameters(), lr=0.1))
    trainer.register_hooks([EMAHook(decay=0.9)] if with_ema else [])
    trainer.train(0, 6)
    return model.state_dict(), torch.get_rng_state()


def test_the_hook_changes_neither_the_training_nor_the_random_numbers():
    # What lets one run report both the trained weights and their EMA (the optimizer study).
    weights, rng = _trained_weights_and_rng(False)
    weights_ema, rng_ema = _trained_weights_and_rng(True)
    assert torch.equal(rng, rng_ema)
    for key, value in weights.items():
        assert torch.equal(weights_ema[key], value), key


def test_copied_buffers_are_the_models():
    model, hook, _ = trained(3, decay=0.5, buffers="copy")
    assert torch.equal(hook.model.bn.running_mean, model.bn.running_mean)
    assert not torch.equal(hook.model.lin.weight, model.lin.weight)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(decay=1.0), r"train.ema.decay=1.0 must be a number in \[0, 1\)"),
        (dict(period=0), "train.ema.period=0 must be a positive whole number"),
        (dict(buffers="mean"), "train.ema.buffers='mean' must be one of"),
    ],
)
def test_bad_settings_name_the_key(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        EMAHook(**kwargs)


def test_train_net_evaluates_the_ema_and_resumes_it_bit_exactly(tmp_path):
    from tools import train_net

    ema = ("train.ema.enabled=True", "train.ema.decay=0.99")
    whole, halves = whole_and_resumed(train_net, tmp_path, *ema)
    a = whole["trainer"]["hooks"]["EMAHook"]["averaged"]
    b = halves["trainer"]["hooks"]["EMAHook"]["averaged"]
    assert sorted(a) == sorted(b) and int(a["n_averaged"]) == 20
    for key, value in a.items():
        assert torch.equal(b[key], value), key
    for key, value in whole["model"].items():  # the training itself resumed exactly
        assert torch.equal(halves["model"][key], value), key
    assert not torch.equal(a["module.head.weight"], whole["model"]["head.weight"])
    rows = [
        json.loads(line) for line in (tmp_path / "whole" / "metrics.json").read_text().splitlines()
    ]
    evaluated = [r for r in rows if "top1" in r]
    assert evaluated and all("ema/top1" in r for r in evaluated)
