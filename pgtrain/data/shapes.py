"""The built-in "shapes" dataset: synthetic instance segmentation written as COCO json + PNGs.

Layout under the root folder::

    ROOT/shapes_stamp.json              the generation parameters
    ROOT/<set>/{train,val}.json         COCO instances json (RLE segmentation)
    ROOT/<set>/{train,val}/000000.png   images

``<set>`` is "A" (circle, square, triangle) or "B" (star, hexagon, cross, ring), disjoint class
sets for a fine-tuning study. Every image is drawn from its own seeded generator, so the files
depend only on the parameters. Run ``python -m pgtrain.data.shapes --out DIR`` to generate.
"""

import argparse
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from typing import Any

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils

from pgtrain.data.coco import COCOInstanceDataset
from pgtrain.data.shapes_draw import CLASS_SETS, SHAPE_NAMES, draw_image
from pgtrain.errors import ConfigError, PgtrainError
from pgtrain.utils import comm
from pgtrain.utils.logger import setup_logger
from pgtrain.utils.progress import Progress

__all__ = ["CLASS_SETS", "default_shapes_root", "ensure_shapes", "shapes_dataset", "shapes_path"]

logger = logging.getLogger(__name__)

_VERSION = 1  # bump when drawing changes, so cached datasets are regenerated
_STAMP = "shapes_stamp.json"
_SPLITS = ("train", "val")
_MIN_ASPECT = 0.625  # short side / long side is drawn from [_MIN_ASPECT, 1]


def default_shapes_root() -> str:
    """Returns ``$PGTRAIN_DATA/shapes`` if PGTRAIN_DATA is set, else ``~/.cache/pgtrain/shapes``."""
    data = os.environ.get("PGTRAIN_DATA")
    if data:
        return os.path.join(os.path.expanduser(data), "shapes")
    return os.path.join(os.path.expanduser("~"), ".cache", "pgtrain", "shapes")


def _image_size(rng: np.random.Generator, long_side: int) -> tuple[int, int]:
    short = int(round(long_side * rng.uniform(_MIN_ASPECT, 1.0)))
    return (long_side, short) if rng.random() < 0.5 else (short, long_side)


def _write_split(
    folder: str,
    set_name: str,
    split: str,
    num_images: int,
    image_size: int,
    seed: int,
    progress: Progress,
) -> None:
    """Draws a split's images into ``folder/<split>/`` and writes ``folder/<split>.json``."""
    kinds = CLASS_SETS[set_name]
    os.makedirs(os.path.join(folder, split))
    images, annotations = [], []
    set_index, split_index = sorted(CLASS_SETS).index(set_name), _SPLITS.index(split)
    for i in range(num_images):
        rng = np.random.default_rng([seed, set_index, split_index, i])
        pixels, instances = draw_image(rng, _image_size(rng, image_size), kinds)
        file_name = f"{i:06d}.png"
        # Fast compression: a few times quicker than the default and still lossless.
        Image.fromarray(pixels).save(os.path.join(folder, split, file_name), compress_level=1)
        height, width = pixels.shape[:2]
        progress.update()
        images.append({"id": i + 1, "file_name": file_name, "height": height, "width": width})
        for kind, mask in instances:
            rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": i + 1,
                    "category_id": SHAPE_NAMES.index(kind) + 1,
                    "segmentation": {"size": [height, width], "counts": rle["counts"].decode()},
                    "area": float(mask_utils.area(rle)),
                    "bbox": [float(v) for v in mask_utils.toBbox(rle)],
                    "iscrowd": 0,
                }
            )
    categories = [
        {"id": SHAPE_NAMES.index(k) + 1, "name": k, "supercategory": "shape"} for k in kinds
    ]
    info = {"description": f"pgtrain shapes, set {set_name}, {split}", "version": str(_VERSION)}
    coco = {"info": info, "images": images, "annotations": annotations, "categories": categories}
    with open(os.path.join(folder, f"{split}.json"), "w") as f:
        json.dump(coco, f)


def _read_stamp(root: str) -> dict[str, Any] | None:
    try:
        with open(os.path.join(root, _STAMP)) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _generate(root: str, params: dict[str, Any]) -> None:
    """Generates into a temporary sibling folder, then renames it to `root`."""
    parent = os.path.dirname(os.path.abspath(root))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".shapes-tmp-", dir=parent)
    counts = (params["num_train"], params["num_val"])
    total = len(CLASS_SETS) * sum(counts)
    logger.info("Generating the shapes dataset (%d images) in %s, once", total, root)
    try:
        with Progress("Generating shapes", total, logger, unit="image") as progress:
            for set_name in sorted(CLASS_SETS):
                folder = os.path.join(tmp, set_name)
                for split, count in zip(_SPLITS, counts, strict=True):
                    _write_split(
                        folder,
                        set_name,
                        split,
                        count,
                        params["image_size"],
                        params["seed"],
                        progress,
                    )
        with open(os.path.join(tmp, _STAMP), "w") as f:
            json.dump(params, f, indent=1)
        _move_into_place(tmp, root, params)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # a no-op once renamed


def _move_into_place(tmp: str, root: str, params: dict[str, Any]) -> None:
    """Renames `tmp` to `root`, replacing an older generation but never foreign files."""
    if os.path.isdir(root) and os.listdir(root):
        if _read_stamp(root) == params:
            return  # a concurrent process finished the same generation first
        old = tempfile.mkdtemp(prefix=".shapes-old-", dir=os.path.dirname(tmp))
        os.rename(root, os.path.join(old, "shapes"))  # both renames are atomic
        os.rename(tmp, root)
        shutil.rmtree(old, ignore_errors=True)
        return
    try:
        os.rename(tmp, root)  # replaces an empty folder
    except OSError:
        if _read_stamp(root) != params:
            raise


def ensure_shapes(
    root: str | None = None,
    *,
    num_train: int = 600,
    num_val: int = 100,
    image_size: int = 256,
    seed: int = 0,
) -> str:
    """Generates the shapes dataset under `root` unless it is there with the same parameters.

    Other parameters than those of the existing data regenerate it. Writing goes to a temporary
    folder renamed at the end, so an interrupted or concurrent generation never leaves a partial
    dataset. In a distributed run each machine's first process generates and the others wait.

    Args:
        root: the dataset folder (default `default_shapes_root()`); pgtrain owns its content.
        num_train: training images per class set.
        num_val: validation images per class set.
        image_size: the long side of the images, in pixels (the short side is 62.5-100% of it).
        seed: the generation seed.

    Returns:
        The root folder.
    """
    root = os.path.abspath(os.path.expanduser(root or default_shapes_root()))
    if num_train < 1 or num_val < 1:
        raise ConfigError(f"shapes: num_train={num_train} and num_val={num_val} must be >= 1")
    if not 64 <= image_size <= 4096:
        raise ConfigError(f"shapes: image_size={image_size} must be within 64..4096 pixels")
    params = {
        "version": _VERSION,
        "num_train": num_train,
        "num_val": num_val,
        "image_size": image_size,
        "seed": seed,
    }
    if comm.get_local_rank() == 0 and _read_stamp(root) != params:
        if os.path.isdir(root) and os.listdir(root) and _read_stamp(root) is None:
            raise PgtrainError(
                f"shapes root '{root}' holds files that are not a shapes dataset; pick an empty "
                "or new folder (PGTRAIN_DATA or the root argument)"
            )
        _generate(root, params)
    comm.synchronize()
    return root


def shapes_path(
    *,
    set: str = "A",
    split: str = "train",
    kind: str = "json",
    root: str | None = None,
    num_train: int = 600,
    num_val: int = 100,
    image_size: int = 256,
    seed: int = 0,
) -> str:
    """Returns the json file (`kind="json"`) or image folder (`"images"`) of a shapes split.

    Generates the dataset first if needed, so a config can write
    ``L(COCOInstanceDataset)(json_file=L(shapes_path)(kind="json", ...), image_root=...)`` and a
    user switch to real COCO data with ``dataloader.train.dataset.json_file=/data/...json``.

    Args:
        set: the class set, "A" (3 classes) or "B" (4 classes).
        split: "train" or "val".
        kind: "json" or "images".
        root, num_train, num_val, image_size, seed: as in `ensure_shapes`.
    """
    if set not in CLASS_SETS:
        raise ConfigError(f"shapes: set='{set}' is not one of {sorted(CLASS_SETS)}")
    if split not in _SPLITS:
        raise ConfigError(f"shapes: split='{split}' is not one of {list(_SPLITS)}")
    if kind not in ("json", "images"):
        raise ConfigError(f"shapes: kind='{kind}' is not 'json' or 'images'")
    root = ensure_shapes(
        root, num_train=num_train, num_val=num_val, image_size=image_size, seed=seed
    )
    return os.path.join(root, set, f"{split}.json" if kind == "json" else split)


def shapes_dataset(
    *,
    set: str = "A",
    split: str = "train",
    root: str | None = None,
    transforms: Callable[..., Any] | None = None,
    num_classes: int | None = None,
    num_train: int = 600,
    num_val: int = 100,
    image_size: int = 256,
    seed: int = 0,
) -> COCOInstanceDataset:
    """Returns a split of the shapes dataset (generated on first use) as a COCOInstanceDataset.

    Args:
        set, split, root, num_train, num_val, image_size, seed: as in `shapes_path`.
        transforms: e.g. `build_train_transforms(...)`.
        num_classes: checked against the set's classes + 1 (the background).
    """
    params = dict(
        set=set,
        split=split,
        root=root,
        num_train=num_train,
        num_val=num_val,
        image_size=image_size,
        seed=seed,
    )
    return COCOInstanceDataset(
        shapes_path(kind="json", **params),
        shapes_path(kind="images", **params),
        transforms=transforms,
        num_classes=num_classes,
        filter_empty=split == "train",
    )


def main(argv: list[str] | None = None) -> None:
    """Generates the shapes dataset from the command line."""
    parser = argparse.ArgumentParser(description="Generate pgtrain's synthetic shapes dataset.")
    parser.add_argument("--out", default=None, help="root folder (default: the cache folder)")
    parser.add_argument("--num-train", type=int, default=600, help="train images per set")
    parser.add_argument("--num-val", type=int, default=100, help="val images per set")
    parser.add_argument("--size", type=int, default=256, help="long side of the images")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    setup_logger()  # the progress lines
    try:
        root = ensure_shapes(
            args.out,
            num_train=args.num_train,
            num_val=args.num_val,
            image_size=args.size,
            seed=args.seed,
        )
    except PgtrainError as exc:
        parser.exit(2, f"error: {exc}\n")
    for set_name, kinds in sorted(CLASS_SETS.items()):
        print(f"set {set_name} ({', '.join(kinds)}): {os.path.join(root, set_name)}")


if __name__ == "__main__":
    main()
