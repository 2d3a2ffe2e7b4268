"""Every config file in the repo survives load -> save -> load -> instantiate."""

import os

import pytest
from omegaconf import DictConfig

from pgtrain.config import LazyConfig, instantiate, to_plain
from pgtrain.engine import build_run as engine_build_run
from tests._repo_configs import ROOT, as_full_config, repo_configs, tiny_overrides


def build_run(cfg: DictConfig) -> dict:
    """Instantiates a full config the way tools/train_net.py does."""
    run = engine_build_run(cfg, device="cpu")
    loaders = instantiate(cfg.dataloader, "dataloader") if "dataloader" in cfg else None
    return {"model": run.model, "optimizer": run.optimizer, "loaders": loaders}


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
        LazyConfig.apply_overrides(full, [*tiny_overrides(full, tmp_path), *_small_images(full)])
        built = build_run(full)
        # Every trainable parameter is in exactly one of the optimizer's groups.
        trainable = {id(p) for p in built["model"].parameters() if p.requires_grad}
        placed = [id(p) for g in built["optimizer"].param_groups for p in g["params"]]
        assert len(placed) == len(set(placed)) and set(placed) == trainable


def _small_images(cfg: DictConfig) -> list[str]:
    return ["shapes.image_size=96"] if "shapes" in cfg else []
