"""Tiny detection data for the data tests: a generated shapes root and a hand-made COCO json."""

import json

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils


@pytest.fixture(scope="session")
def shapes_root(tmp_path_factory):
    from pgtrain.data.shapes import ensure_shapes

    root = tmp_path_factory.mktemp("data") / "shapes"
    return ensure_shapes(str(root), num_train=6, num_val=3, image_size=96, seed=0)


def _rect(height, width, x0, y0, x1, y1):
    mask = np.zeros((height, width), dtype=np.uint8)
    mask[y0:y1, x0:x1] = 1
    return mask


def _uncompressed_rle(mask):
    """COCO's uncompressed RLE: run lengths over the column-major pixels, zeros first."""
    flat = mask.flatten(order="F")
    changes = np.flatnonzero(np.diff(flat)) + 1
    runs = np.diff(np.concatenate([[0], changes, [flat.size]])).tolist()
    if flat[0]:
        runs = [0] + runs
    return {"size": list(mask.shape), "counts": runs}


@pytest.fixture
def coco_files(tmp_path):
    """Writes two 40x60 images and a json with polygon, RLE and crowd annotations.

    Image 1: a polygon rectangle (cat 7), an uncompressed-RLE rectangle (cat 3) and a crowd
    region (cat 3). Image 2 (a tall 60x40 image): a compressed-RLE rectangle (cat 9).
    Image 3 has only a crowd annotation. Returns (json path, image folder, the json dict).
    """
    images_dir = tmp_path / "images"
    images_dir.mkdir()
    sizes = {1: (40, 60), 2: (60, 40), 3: (40, 60)}
    for image_id, (h, w) in sizes.items():
        pixels = np.random.default_rng(image_id).integers(0, 255, (h, w, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(images_dir / f"{image_id}.png")
    compressed = mask_utils.encode(np.asfortranarray(_rect(60, 40, 5, 10, 25, 50)))
    annotations = [
        # polygon of the pixels x in [10, 30), y in [5, 15): its corners as pixel edges
        {"id": 1, "image_id": 1, "category_id": 7, "bbox": [10, 5, 20, 10], "area": 200,
         "segmentation": [[10, 5, 30, 5, 30, 15, 10, 15]], "iscrowd": 0},
        {"id": 2, "image_id": 1, "category_id": 3, "bbox": [40, 20, 15, 12], "area": 180,
         "segmentation": _uncompressed_rle(_rect(40, 60, 40, 20, 55, 32)), "iscrowd": 0},
        {"id": 3, "image_id": 1, "category_id": 3, "bbox": [0, 30, 10, 10], "area": 100,
         "segmentation": _uncompressed_rle(_rect(40, 60, 0, 30, 10, 40)), "iscrowd": 1},
        {"id": 4, "image_id": 2, "category_id": 9, "bbox": [5, 10, 20, 40], "area": 800,
         "segmentation": {"size": [60, 40], "counts": compressed["counts"].decode()},
         "iscrowd": 0},
        {"id": 5, "image_id": 3, "category_id": 9, "bbox": [0, 0, 10, 10], "area": 100,
         "segmentation": _uncompressed_rle(_rect(40, 60, 0, 0, 10, 10)), "iscrowd": 1},
    ]  # fmt: skip
    data = {
        "images": [
            {"id": i, "file_name": f"{i}.png", "height": h, "width": w}
            for i, (h, w) in sizes.items()
        ],
        "annotations": annotations,
        "categories": [{"id": c, "name": f"class{c}"} for c in (9, 3, 7)],
    }
    json_file = tmp_path / "instances.json"
    json_file.write_text(json.dumps(data))
    return str(json_file), str(images_dir), data
