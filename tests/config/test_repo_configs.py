"""Every config file in the repo survives load -> save -> load -> instantiate."""

import glob
import os

import pytest
import torch
from omegaconf import DictConfig

from pgtrain.config import LazyConfig, instantiate, to_plain
from pgtrain.solver import build_lr_scheduler, build_optimizer

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TOY = os.path.join(ROOT, "configs", "quick", "toy.py")


def repo_configs():
    files = glob.glob(os.path.join(ROOT, "configs", "**", "*.py"), recursive=True)
    files += glob.glob(os.path.join(ROOT, "projects", "**", "*config*.py"), recursive=True)
    return sorted(os.path.relpath(f, ROOT) for f in files if not f.endswith("__init__.py"))


def build_run(cfg: DictConfig) -> dict:
    """Instantiates a full config the way tools/train_net.py does."""
    model = instantiate(cfg.model, "model")
    optimizer = build_optimizer(cfg.optimizer, model)
    # Inspection-only configs (e.g. projects/vit/stmixer_config.py) have no data or schedule.
    scheduler = build_lr_scheduler(cfg.lr_scheduler, optimizer) if "lr_scheduler" in cfg else None
    loaders = instantiate(cfg.dataloader, "dataloader") if "dataloader" in cfg else None
    return {"model": model, "optimizer": optimizer, "scheduler": scheduler, "loaders": loaders}


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
        elif "schedule" in node:
            toy.lr_scheduler = node
        else:
            pytest.fail(f"do not know where fragment node '{key}' goes; extend as_full_config")
        full.append(toy)
    return full


def test_the_repo_has_configs():
    assert "configs/quick/toy.py" in repo_configs()


@pytest.mark.parametrize("path", repo_configs())
def test_config_round_trips_and_instantiates(path, tmp_path):
    cfg = LazyConfig.load(os.path.join(ROOT, path))
    LazyConfig.save(cfg, str(tmp_path / "a.yaml"))
    back = LazyConfig.load(str(tmp_path / "a.yaml"))
    assert to_plain(back) == to_plain(cfg)
    LazyConfig.save(back, str(tmp_path / "b.yaml"))
    assert (tmp_path / "a.yaml").read_text() == (tmp_path / "b.yaml").read_text()
    for full in as_full_config(back):
        if "shapes" in full:  # keep the generated data tiny and out of the user's cache
            LazyConfig.apply_overrides(
                full,
                [
                    f"shapes.root={tmp_path / 'shapes'}",
                    "shapes.num_train=4",
                    "shapes.num_val=2",
                    "shapes.image_size=96",
                ],
            )
        built = build_run(full)
        assert isinstance(built["model"], torch.nn.Module)
        assert isinstance(built["optimizer"], torch.optim.Optimizer)
