"""The datasets of a config, checked whole before any process starts.

`check_datasets` is what the tools call after the config checks and before the launch: every COCO
dataset of ``dataloader.train`` and ``dataloader.test`` (and a COCO evaluator's own json) goes
through `check_coco`, so a refused annotation or image file is one line and exit 2 before the
model, the processes or the first checkpoint exist, not a traceback when the sampler (or the
final evaluation) reaches it. `coco_datasets` finds them for `tools/check_dataset.py` too.
"""

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig

from pgtrain.config import instantiate
from pgtrain.config.lazy_call import TARGET, locate
from pgtrain.data.coco import COCOInstanceDataset
from pgtrain.data.coco_check import check_coco

__all__ = ["CocoSource", "check_datasets", "coco_datasets"]

logger = logging.getLogger(__name__)

SPLITS = ("train", "test")


@dataclass(frozen=True)
class CocoSource:
    """One COCO dataset a config builds: where in the config, its json and image folder."""

    key: str  # e.g. "dataloader.test.dataset"
    split: str
    json_file: str
    image_root: str | None
    node: Any  # the dataset's config node (None for an evaluator's json)


def coco_datasets(cfg: Any, splits: tuple[str, ...] = SPLITS) -> Iterator[CocoSource]:
    """Yields the COCO datasets of ``dataloader.<split>.dataset`` (the `COCOInstanceDataset`
    nodes; their paths instantiated, which generates the built-in data if needed), then the json
    of a ``dataloader.evaluator`` that names one of its own."""
    loaders = cfg.get("dataloader") if isinstance(cfg, DictConfig) else None
    if loaders is None:
        return
    seen = set()
    for split in splits:
        node = loaders.get(split, {}).get("dataset") if split in loaders else None
        if not _builds_coco(node):
            continue
        key = f"dataloader.{split}.dataset"
        json_file = str(instantiate(node.json_file, f"{key}.json_file"))
        image_root = str(instantiate(node.image_root, f"{key}.image_root"))
        seen.add(json_file)
        yield CocoSource(key, split, json_file, image_root, node)
    evaluator = loaders.get("evaluator")
    source = evaluator.get("dataset_or_json") if isinstance(evaluator, DictConfig) else None
    if isinstance(source, str) and source.endswith(".json") and source not in seen:
        yield CocoSource("dataloader.evaluator.dataset_or_json", "test", source, None, None)


def check_datasets(cfg: Any) -> None:
    """Checks every COCO dataset of `cfg` whole (json, image headers); logs each one's repairs.

    Raises:
        DatasetError: the first refused item of the first dataset with one, in one line
            naming the json, the ids and the field.
        DatasetNotFoundError: image files are missing.
    """
    for source in coco_datasets(cfg):
        check = check_coco(source.json_file, source.image_root)
        check.raise_if_refused()
        line = check.repairs_line()
        if line:
            logger.info("%s: %s", source.key, line)


def _builds_coco(node: Any) -> bool:
    if not isinstance(node, DictConfig) or TARGET not in node:
        return False
    if "json_file" not in node or "image_root" not in node:
        return False
    target = node[TARGET]
    target = locate(target) if isinstance(target, str) else target
    return isinstance(target, type) and issubclass(target, COCOInstanceDataset)
