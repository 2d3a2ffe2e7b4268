"""The repo's config files, and how tests make each one a full, tiny run."""

import glob
import os

import pytest
from omegaconf import DictConfig

from pgtrain.config import LazyConfig

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOY = os.path.join(ROOT, "configs", "quick", "toy.py")


def repo_configs() -> list[str]:
    """Every config file under configs/ and projects/, relative to the repo root."""
    files = glob.glob(os.path.join(ROOT, "configs", "**", "*.py"), recursive=True)
    files += glob.glob(os.path.join(ROOT, "projects", "**", "*config*.py"), recursive=True)
    return sorted(os.path.relpath(f, ROOT) for f in files if not f.endswith("__init__.py"))


def as_full_config(cfg: DictConfig) -> list[DictConfig]:
    """A full config as is; a fragment's nodes each placed into the toy config."""
    if "model" in cfg:
        return [cfg]
    full = []
    for key in cfg:
        toy = LazyConfig.load(TOY)
        node = cfg[key]
        if key == "train":
            toy.train = node
        elif "params" in node:
            toy.optimizer = node
            # A hidden matrix besides the stem and the head, so that Muon has one to route.
            toy.model.depth = 3
        elif "schedule" in node:
            toy.lr_scheduler = node
        else:
            pytest.fail(f"do not know where fragment node '{key}' goes; extend as_full_config")
        full.append(toy)
    return full


_FEW_ROIS = {
    "rpn_pre_nms_top_n_train": 300,
    "rpn_post_nms_top_n_train": 150,
    "rpn_pre_nms_top_n_test": 300,
    "rpn_post_nms_top_n_test": 150,
    "box_batch_size_per_image": 64,
}


def tiny_overrides(cfg: DictConfig, tmp_path) -> list[str]:
    """Overrides that keep a repo config's data tiny and its outputs under `tmp_path`."""
    opts = []
    if "shapes" in cfg:  # generated data: small, and out of the user's cache
        opts += [
            f"shapes.root={tmp_path / 'shapes'}",
            "shapes.num_train=4",
            "shapes.num_val=2",
        ]
    if "train" in cfg and "output_dir" in cfg.train:
        opts.append(f"train.output_dir={tmp_path / 'run'}")
    if cfg.get("train", {}).get("init_checkpoint"):  # a fine-tuning config's earlier stage
        opts.append("train.init_checkpoint=")
    model = cfg.get("model", {})
    if "min_size" in model and "max_size" in model:  # torchvision's detectors: 800 px, 2000 RoIs
        opts += ["model.min_size=256", "model.max_size=256"]
        opts += [f"model.{k}={v}" for k, v in _FEW_ROIS.items() if k in model]
    return opts


# A schedule in iterations: a run of 10 iterations and its resume to 20 follow one schedule, so
# their weights can be compared with an unbroken run of 20 (fractions would move the milestones).
FIXED_SCHEDULE = [
    "lr_scheduler.schedule.unit=iter",
    "lr_scheduler.schedule.milestones=[15]",
    "lr_scheduler.schedule.warmup_length=0",
]


def toy_run(output_dir, *overrides: str) -> DictConfig:
    """The toy config with a fixed schedule, evaluating and saving every 10 iterations."""
    return LazyConfig.apply_overrides(
        LazyConfig.load(TOY),
        [
            *FIXED_SCHEDULE,
            "train.eval_period=10",
            "train.checkpoint.period=10",
            "train.log_period=5",
            f"train.output_dir={output_dir}",
            *overrides,
        ],
    )


def whole_and_resumed(train_net, tmp_path, *overrides: str):
    """Trains the toy run for 20 iterations unbroken, and for 10 then resumed to 20; returns the
    two final checkpoints."""
    import torch

    for name in ("whole", "halves"):
        (tmp_path / name).mkdir()
    torch.manual_seed(0)  # the same initial weights (train_net's setup would seed)
    train_net.do_train(toy_run(tmp_path / "whole", *overrides, "train.max_iter=20"), resume=False)
    torch.manual_seed(0)
    train_net.do_train(toy_run(tmp_path / "halves", *overrides, "train.max_iter=10"), resume=False)
    train_net.do_train(toy_run(tmp_path / "halves", *overrides, "train.max_iter=20"), resume=True)
    load = lambda name: torch.load(tmp_path / name / "model_final.pth", weights_only=True)  # noqa: E731
    return load("whole"), load("halves")
