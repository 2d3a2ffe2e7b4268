"""A hand-made COCO instances json with known answers, and predictions derived from it.

Category ids are deliberately not contiguous (3, 7, 12 -> labels 1, 2, 3). Every rectangle has
even corners and sides, so halving the image and scaling back up reproduces masks exactly.
Spawned test processes import this module by name, so it imports nothing from the tests.
"""

import json
import warnings

import numpy as np
import torch
from pycocotools import mask as mask_util
from pycocotools.coco import COCO

CATEGORIES = [
    {"id": 3, "name": "circle"},
    {"id": 7, "name": "square"},
    {"id": 12, "name": "triangle"},
]
LABEL_TO_CATEGORY = {1: 3, 2: 7, 3: 12}
CATEGORY_TO_LABEL = {v: k for k, v in LABEL_TO_CATEGORY.items()}
CLASS_NAMES = ["circle", "square", "triangle"]

IMAGES = [
    {"id": 1, "height": 64, "width": 64, "file_name": "a.png"},
    {"id": 2, "height": 128, "width": 128, "file_name": "b.png"},
    {"id": 5, "height": 64, "width": 64, "file_name": "empty.png"},  # no objects
]

# (image_id, category_id, (x0, y0, x1, y1) exclusive, iscrowd, as polygon)
_OBJECTS = [
    (1, 3, (8, 8, 24, 20), 0, True),  # small, polygon
    (1, 7, (30, 30, 50, 46), 0, False),  # small, RLE
    (2, 12, (4, 4, 124, 88), 0, False),  # large (10080 px)
    (2, 7, (10, 92, 50, 124), 0, False),  # medium (1280 px)
    (2, 3, (60, 92, 120, 124), 1, False),  # crowd: ignored by COCOeval, not to be predicted
]
NUM_INSTANCES = 4  # non-crowd objects


def _annotation(ann_id: int, obj: tuple, image: dict) -> dict:
    image_id, cat_id, (x0, y0, x1, y1), iscrowd, polygon = obj
    if polygon:
        segmentation = [[x0, y0, x1, y0, x1, y1, x0, y1]]
    else:
        mask = np.zeros((image["height"], image["width"]), dtype=np.uint8)
        mask[y0:y1, x0:x1] = 1
        segmentation = mask_util.encode(np.asfortranarray(mask))
        segmentation["counts"] = segmentation["counts"].decode("utf-8")
    return {
        "id": ann_id,
        "image_id": image_id,
        "category_id": cat_id,
        "bbox": [x0, y0, x1 - x0, y1 - y0],
        "area": (x1 - x0) * (y1 - y0),
        "iscrowd": iscrowd,
        "segmentation": segmentation,
    }


def write_instances_json(path: str) -> str:
    """Writes the instances json to `path` and returns the path."""
    images = {im["id"]: im for im in IMAGES}
    annotations = [_annotation(i, obj, images[obj[0]]) for i, obj in enumerate(_OBJECTS, 1)]
    with open(path, "w") as f:
        json.dump({"images": IMAGES, "annotations": annotations, "categories": CATEGORIES}, f)
    return path


def perfect_predictions(
    coco: COCO, image_id: int, *, scale: int = 1, score: float = 0.9
) -> tuple[tuple[torch.Tensor, dict], dict]:
    """Returns ((image, target), prediction) predicting the image's ground truth exactly.

    With `scale` 2 the image the model "saw" is half the original size and the prediction is
    in its coordinates; ``target["orig_size"]`` keeps the original size.
    """
    info = coco.imgs[image_id]
    anns = [a for a in coco.imgToAnns.get(image_id, []) if not a["iscrowd"]]
    height, width = info["height"] // scale, info["width"] // scale
    boxes = torch.tensor(
        [[x, y, x + w, y + h] for x, y, w, h in (a["bbox"] for a in anns)], dtype=torch.float32
    ).reshape(-1, 4)
    masks = torch.zeros(0, 1, height, width)
    if anns:
        with warnings.catch_warnings():
            # pycocotools' decode warns under NumPy 2 about the copy keyword; harmless here.
            warnings.simplefilter("ignore", DeprecationWarning)
            full = np.stack([coco.annToMask(a) for a in anns])
        masks = torch.from_numpy(full[:, None, ::scale, ::scale].copy()).float()
    prediction = {
        "boxes": boxes / scale,
        "labels": torch.tensor([CATEGORY_TO_LABEL[a["category_id"]] for a in anns]),
        "scores": torch.full((len(anns),), score),
        "masks": masks,
    }
    target = {"image_id": image_id, "orig_size": (info["height"], info["width"])}
    return (torch.zeros(3, height, width, dtype=torch.uint8), target), prediction


def empty_prediction(coco: COCO, image_id: int) -> tuple[tuple[torch.Tensor, dict], dict]:
    """Returns ((image, target), prediction) with no detections."""
    (image, target), _ = perfect_predictions(coco, image_id)
    prediction = {
        "boxes": torch.zeros(0, 4),
        "labels": torch.zeros(0, dtype=torch.int64),
        "scores": torch.zeros(0),
        "masks": torch.zeros(0, 1, *image.shape[-2:]),
    }
    return (image, target), prediction
