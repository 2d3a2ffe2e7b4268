"""Load reports: bare state_dicts, shape mismatches, missing/unexpected keys and fresh params."""

import logging
import os

import torch
from torch import nn

from pgtrain.checkpoint import Checkpointer, CheckpointReport


def test_bare_state_dict_with_other_num_classes(tmp_path, make_net, caplog):
    # The torchvision scenario: pretrained weights for 3 classes, a model built for 5.
    source = make_net(seed=0, num_classes=3)
    path = str(tmp_path / "pretrained.pth")
    torch.save(source.state_dict(), path)
    model = make_net(seed=1, num_classes=5)
    head_init = {k: v.clone() for k, v in model.head.state_dict().items()}

    with caplog.at_level(logging.WARNING, logger="pgtrain.checkpoint"):
        report = Checkpointer(model).load(path)

    assert report.shape_mismatched == [
        ("head.weight", (3, 8), (5, 8)),
        ("head.bias", (3,), (5,)),
    ]
    assert report.fresh == ["head.weight", "head.bias"]
    assert report.missing == report.unexpected == []
    assert report.extra == {}
    assert "head.weight" not in report.loaded and "backbone.0.weight" in report.loaded
    assert "head.weight" in caplog.text and "shape" in caplog.text
    for key, value in head_init.items():
        assert torch.equal(model.head.state_dict()[key], value)
    for key, value in source.backbone.state_dict().items():
        assert torch.equal(model.backbone.state_dict()[key], value)
    assert (
        "fresh: not in this file, start from their initialization (2): head.weight, head.bias"
        in report.summary()
    )


class _Grown(nn.Module):
    """TinyNet's layout plus a new branch, to get missing keys."""

    def __init__(self, make_net) -> None:
        super().__init__()
        net = make_net(seed=3, num_classes=4)
        self.backbone, self.head = net.backbone, net.head
        self.branch = nn.Linear(2, 2)


def test_missing_unexpected_and_fresh(tmp_path, make_net):
    state = make_net(seed=0, num_classes=3).state_dict()
    del state["backbone.1.running_mean"]  # a buffer: missing, but not a fresh parameter
    state["old_head.weight"] = torch.zeros(2)
    path = str(tmp_path / "weights.pth")
    torch.save(state, path)

    report = Checkpointer(_Grown(make_net)).load(path)

    assert sorted(report.missing) == ["backbone.1.running_mean", "branch.bias", "branch.weight"]
    assert report.unexpected == ["old_head.weight"]
    assert [k for k, _, _ in report.shape_mismatched] == ["head.weight", "head.bias"]
    assert report.fresh == ["head.weight", "head.bias", "branch.weight", "branch.bias"]


def test_fresh_is_kept_across_resume(tmp_path, make_net):
    init = str(tmp_path / "init.pth")
    torch.save(make_net(num_classes=3).state_dict(), init)
    save_dir = str(tmp_path / "run")

    first = Checkpointer(make_net(seed=1, num_classes=5), save_dir)
    assert first.resume_or_load(init, resume=True).fresh == ["head.weight", "head.bias"]
    checkpoint = first.save("model_0000003", iteration=3)

    # Resuming: the file provides every key, yet the run's fresh params stay the same.
    resumed = Checkpointer(make_net(seed=2, num_classes=5), save_dir)
    report = resumed.resume_or_load(init, resume=True)
    assert report.path == checkpoint
    assert report.fresh == ["head.weight", "head.bias"]
    assert report.shape_mismatched == []
    # Fine-tuning from that checkpoint as initial weights: nothing is fresh.
    assert Checkpointer(make_net(num_classes=5)).load(checkpoint, []).fresh == []


def test_without_checkpoint_report_is_empty(make_net):
    report = Checkpointer(make_net()).resume_or_load("", resume=True)
    assert report == CheckpointReport(path="")
    assert report.summary().startswith("No checkpoint loaded")


def test_ddp_prefix_is_stripped(tmp_path, make_net):
    source = make_net(seed=0)
    path = str(tmp_path / "ddp.pth")
    torch.save({"model": {f"module.{k}": v for k, v in source.state_dict().items()}}, path)
    model = make_net(seed=1)
    report = Checkpointer(model).load(path)
    assert report.missing == report.unexpected == report.fresh == []
    assert torch.equal(model.head.weight, source.head.weight)


class _Tied(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(5, 4)
        self.out = nn.Linear(4, 5, bias=False)
        self.out.weight = self.embed.weight


def test_tied_weight_loaded_through_one_name_is_not_missing(tmp_path):
    source = _Tied()
    path = str(tmp_path / "tied.pth")
    torch.save({"embed.weight": source.embed.weight.detach().clone()}, path)
    model = _Tied()
    report = Checkpointer(model).load(path)
    assert report.missing == [] and report.fresh == []
    assert torch.equal(model.out.weight, source.embed.weight)


def test_model_only_load_leaves_checkpointables_and_reports_extra(tmp_path, make_net):
    model = make_net(seed=0)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    Checkpointer(model, str(tmp_path), optimizer=optimizer).save("model_0000007", iteration=7)

    other = make_net(seed=1)
    other_optimizer = torch.optim.SGD(other.parameters(), lr=0.01)
    checkpointer = Checkpointer(other, optimizer=other_optimizer)
    report = checkpointer.load(os.path.join(str(tmp_path), "model_0000007.pth"), [])
    assert report.checkpointables == [] and not report.rng_restored
    assert report.extra == {"iteration": 7}
    assert other_optimizer.param_groups[0]["lr"] == 0.01
    assert torch.equal(other.head.weight, model.head.weight)
