"""An exact-resume workload where it can fail, and the run that checks it in every process.

Dropout in the model and random augmentation in the data draw on every rank's RNG; the
dataset's length (37) leaves an uneven remainder at every epoch boundary; batches are dicts or
``(features, label)`` tuples; two micro-batches make an optimizer step.
"""

import os
import shutil
from types import SimpleNamespace

import torch

from pgtrain.config import LazyCall as L
from pgtrain.config import LazyConfig
from pgtrain.data import ToyClassificationDataset
from pgtrain.modeling import MLPClassifier
from pgtrain.utils import comm

CHECKPOINT = "model_0000005.pth"  # after 5 iterations of 12: past the first epoch boundary


class AugmentedToy(ToyClassificationDataset):
    """The toy clusters with random jitter on every draw; samples are dicts or tuples."""

    def __init__(self, *, as_tuple: bool = False, **kwargs) -> None:
        super().__init__(**kwargs)
        self.as_tuple = as_tuple

    def __getitem__(self, index: int):
        sample = super().__getitem__(index)
        features = sample["features"] + 0.3 * torch.randn_like(sample["features"])
        return (features, sample["label"]) if self.as_tuple else {**sample, "features": features}


class PairOrDictMLP(MLPClassifier):
    """The toy MLP taking a ``(features, label)`` batch as well as a dict."""

    def forward(self, batch):
        if isinstance(batch, list | tuple):
            batch = {"features": batch[0], "label": batch[1]}
        return super().forward(batch)


def exact_resume_config(out: str, *more: str, as_tuple: bool):
    """The toy config on the workload above: 12 iterations, a checkpoint every 5; `more`:
    overrides on top."""
    from tests._repo_configs import TOY

    cfg = LazyConfig.load(TOY)
    cfg.model = L(PairOrDictMLP)(in_dim=16, hidden_dim=32, depth=2, num_classes=4, dropout=0.3)
    cfg.dataloader.train.dataset = L(AugmentedToy)(
        split="train", num_samples=37, dim=16, num_classes=4, noise=3.0, as_tuple=as_tuple
    )
    cfg.dataloader.train.total_batch_size = 4
    overrides = [
        f"train.output_dir={out}",
        "train.max_iter=12",
        "train.accumulation=2",
        "train.checkpoint.period=5",
        "train.eval_period=0",
        "train.log_period=4",
        "train.param_group_stats_period=0",
        "optimizer.momentum=0.9",
        *more,
    ]
    return LazyConfig.apply_overrides(cfg, overrides)


def train_unbroken_and_resumed(out: str, as_tuple: bool, *more: str) -> None:
    """Trains unbroken in ``out/unbroken``, then resumes ``out/resumed`` from the unbroken run's
    checkpoint after iteration 4 (what a run stopped there left), each as a fresh process
    would (`default_setup` seeds every rank)."""
    from tools import train_net

    torch.set_num_threads(1)
    unbroken, resumed = os.path.join(out, "unbroken"), os.path.join(out, "resumed")
    cfg = exact_resume_config(unbroken, *more, as_tuple=as_tuple)
    train_net.main(cfg, SimpleNamespace(eval_only=False, resume=False))
    if comm.is_main_process():
        os.makedirs(resumed)
        shutil.copy(os.path.join(unbroken, CHECKPOINT), resumed)
        with open(os.path.join(resumed, "last_checkpoint"), "w") as f:
            f.write(CHECKPOINT)
    comm.synchronize()
    cfg = exact_resume_config(resumed, *more, as_tuple=as_tuple)
    train_net.main(cfg, SimpleNamespace(eval_only=False, resume=True))


def train_variants(out: str) -> None:
    """`train_unbroken_and_resumed` with dict batches, then tuple batches (one launch)."""
    for as_tuple in (False, True):
        train_unbroken_and_resumed(os.path.join(out, "tuple" if as_tuple else "dict"), as_tuple)
