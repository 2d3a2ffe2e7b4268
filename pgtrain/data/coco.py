"""COCOInstanceDataset: a COCO instances json and its image folder, as torchvision tv_tensors."""

import contextlib
import io
import json
import os
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from PIL import Image
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from torch.utils.data import Dataset
from torchvision import tv_tensors

from pgtrain.errors import ConfigError, DatasetError, DatasetNotFoundError

__all__ = ["COCOInstanceDataset"]

_REQUIRED_TOP = ("images", "annotations", "categories")
_REQUIRED_FIELDS = {
    "images": ("id", "file_name", "width", "height"),
    "annotations": ("id", "image_id", "bbox", "category_id", "segmentation"),
    "categories": ("id", "name"),
}


class COCOInstanceDataset(Dataset):
    """Instance-segmentation samples ``(image, target)`` read from a COCO instances json.

    `image` is a uint8 ``tv_tensors.Image`` (3×H×W, RGB). `target` holds ``boxes`` (XYXY
    ``BoundingBoxes`` in pixels), ``masks`` (N×H×W uint8 ``Mask``), ``labels`` (int64 in 1..K,
    the json's category ids in sorted order; 0 is the background), ``image_id`` (the json id),
    ``iscrowd`` (int64, all zero), ``area`` (the json's areas, in pixels of the image file) and
    ``orig_size`` ((H, W) of the image file). Crowd regions and degenerate boxes are left out of
    the targets (torchvision's losses cannot ignore them); evaluation reads them from the json.

    Attributes:
        json_file: the path of the json.
        coco: the pycocotools ``COCO`` object of the json (for evaluation).
        class_names: category names; ``class_names[i]`` is label ``i + 1``.
        contiguous_to_category_id: label (1..K) -> the json's category id.
        image_sizes: (height, width) of each item's image, from the json (no decoding).
    """

    def __init__(
        self,
        json_file: str,
        image_root: str,
        *,
        transforms: Callable[..., Any] | None = None,
        num_classes: int | None = None,
        filter_empty: bool = True,
    ) -> None:
        """Reads and checks the json; images are decoded lazily in `__getitem__`.

        Args:
            json_file: a COCO instances json (images, annotations with segmentation, categories).
            image_root: the folder the images' ``file_name`` entries are relative to.
            transforms: called as ``transforms(image, target)``, e.g. `build_train_transforms`.
            num_classes: if given, the model's class count including the background; it must be
                the number of categories + 1.
            filter_empty: drop images without a usable (non-crowd, non-degenerate) annotation,
                as training wants; keep them (False) for evaluation.
        """
        if not os.path.isfile(json_file):
            raise DatasetNotFoundError(
                f"json_file '{json_file}' does not exist; pass the path of a COCO instances json"
            )
        if not os.path.isdir(image_root):
            raise DatasetNotFoundError(
                f"image_root '{image_root}' is not a folder; pass the folder that holds the "
                f"images of {json_file}"
            )
        self.json_file = json_file
        self.image_root = image_root
        self.transforms = transforms
        data = _load_json(json_file)
        _check_fields(data, json_file)
        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
            self.coco = COCO()
            self.coco.dataset = data
            self.coco.createIndex()
        categories = sorted(data["categories"], key=lambda c: c["id"])
        self.class_names = [c["name"] for c in categories]
        self.contiguous_to_category_id = {i + 1: c["id"] for i, c in enumerate(categories)}
        self._label_of = {c["id"]: i + 1 for i, c in enumerate(categories)}
        _check_num_classes(num_classes, len(categories), json_file)
        self._anns = _usable_annotations(data)
        self._images = [
            image for image in data["images"] if not filter_empty or self._anns.get(image["id"])
        ]
        self.image_sizes = [(int(im["height"]), int(im["width"])) for im in self._images]

    def __len__(self) -> int:
        return len(self._images)

    def __getitem__(self, index: int) -> tuple[tv_tensors.Image, dict[str, Any]]:
        info = self._images[index]
        image = self._read_image(info)
        height, width = image.shape[-2:]
        anns = self._anns.get(info["id"], [])
        masks = np.zeros((len(anns), height, width), dtype=np.uint8)
        for i, ann in enumerate(anns):
            masks[i] = _decode_segmentation(ann, height, width, self.json_file)
        boxes = torch.tensor([a["bbox"] for a in anns], dtype=torch.float32).reshape(-1, 4)
        boxes[:, 2:] += boxes[:, :2]  # XYWH -> XYXY
        target = {
            "boxes": tv_tensors.BoundingBoxes(boxes, format="XYXY", canvas_size=(height, width)),
            "masks": tv_tensors.Mask(torch.from_numpy(masks)),
            "labels": torch.tensor([self._label_of[a["category_id"]] for a in anns]).long(),
            "image_id": info["id"],
            "iscrowd": torch.zeros(len(anns), dtype=torch.int64),
            "area": torch.tensor([_area(a) for a in anns], dtype=torch.float32),
            "orig_size": (height, width),
        }
        if self.transforms is not None:
            image, target = self.transforms(image, target)
        return image, target

    def _read_image(self, info: dict[str, Any]) -> tv_tensors.Image:
        path = os.path.join(self.image_root, info["file_name"])
        if not os.path.isfile(path):
            raise DatasetNotFoundError(
                f"image '{path}' (image id {info['id']} of {self.json_file}) does not exist; "
                "check image_root"
            )
        try:
            with Image.open(path) as file:
                size = (file.height, file.width)
                pixels = np.array(file.convert("RGB"))
        except (OSError, ValueError, SyntaxError) as exc:  # PIL's errors for broken files
            raise DatasetError(
                f"cannot read image '{path}' (image id {info['id']}): {_first_line(exc)}; "
                f"replace the file or remove the image from {self.json_file}"
            ) from exc
        if size != (info["height"], info["width"]):
            raise DatasetError(
                f"image '{path}' is {size[0]}x{size[1]} (HxW) but {self.json_file} says "
                f"{info['height']}x{info['width']}; fix the json's height/width"
            )
        image = torch.from_numpy(pixels).permute(2, 0, 1).contiguous()
        return tv_tensors.Image(image)


def _load_json(json_file: str) -> dict[str, Any]:
    try:
        with open(json_file) as f:
            data = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DatasetError(f"json_file '{json_file}' is not valid json: {exc}") from exc
    if not isinstance(data, dict):
        raise DatasetError(f"json_file '{json_file}' must hold a json object (COCO instances)")
    return data


def _check_fields(data: dict[str, Any], json_file: str) -> None:
    for key in _REQUIRED_TOP:
        if not isinstance(data.get(key), list):
            raise DatasetError(
                f"{json_file} has no '{key}' list; a COCO instances json needs "
                f"{', '.join(_REQUIRED_TOP)}"
            )
    for key, fields in _REQUIRED_FIELDS.items():
        for i, entry in enumerate(data[key]):
            if not isinstance(entry, dict):
                raise DatasetError(f"{json_file}: {key}[{i}] is not a json object")
            missing = [f for f in fields if f not in entry]
            if missing:
                ident = f"id {entry['id']}" if "id" in entry else f"index {i}"
                raise DatasetError(
                    f"{json_file}: {key[:-1]} {ident} has no {', '.join(map(repr, missing))}; "
                    f"every {key[:-1]} needs {', '.join(fields)}"
                )
    image_ids = {image["id"] for image in data["images"]}
    category_ids = {c["id"] for c in data["categories"]}
    for ann in data["annotations"]:
        if ann["image_id"] not in image_ids:
            raise DatasetError(
                f"{json_file}: annotation id {ann['id']} refers to image_id {ann['image_id']}, "
                "which is not in 'images'"
            )
        if ann["category_id"] not in category_ids:
            raise DatasetError(
                f"{json_file}: annotation id {ann['id']} has category_id {ann['category_id']}, "
                f"which is not in 'categories' (ids {sorted(category_ids)})"
            )
        bbox = ann["bbox"]
        numbers = isinstance(bbox, list) and all(isinstance(v, int | float) for v in bbox)
        if not numbers or len(bbox) != 4:
            raise DatasetError(
                f"{json_file}: annotation id {ann['id']} has bbox {bbox!r}; "
                "expected [x, y, width, height]"
            )


def _check_num_classes(num_classes: int | None, num_categories: int, json_file: str) -> None:
    if num_classes is None or num_classes == num_categories + 1:
        return
    raise ConfigError(
        f"{json_file} has {num_categories} categories but num_classes={num_classes}; the "
        f"model's num_classes counts the background: set model.num_classes={num_categories + 1}"
        " (and the dataset's num_classes, if given, to the same value)"
    )


def _usable_annotations(data: dict[str, Any]) -> dict[int, list[dict[str, Any]]]:
    """Groups the non-crowd annotations with a positive-size box by image id, in json order."""
    by_image: dict[int, list[dict[str, Any]]] = {}
    for ann in data["annotations"]:
        if ann.get("iscrowd", 0):
            continue
        _, _, w, h = ann["bbox"]
        if w > 0 and h > 0:
            by_image.setdefault(ann["image_id"], []).append(ann)
    return by_image


def _decode_segmentation(ann: dict[str, Any], height: int, width: int, json_file: str) -> Any:
    """Returns the H×W uint8 mask of a polygon, uncompressed-RLE or compressed-RLE annotation."""
    segm = ann["segmentation"]
    try:
        if isinstance(segm, list):  # polygons: one flat [x0, y0, x1, y1, ...] list per part
            polygons = [p for p in segm if len(p) >= 6]
            if not polygons:
                raise ValueError("no polygon with at least 3 points")
            rle = mask_utils.merge(mask_utils.frPyObjects(polygons, height, width))
        elif isinstance(segm, dict) and isinstance(segm.get("counts"), list):
            rle = mask_utils.frPyObjects(segm, height, width)  # uncompressed RLE
        elif isinstance(segm, dict) and "counts" in segm:
            rle = dict(segm)
            if isinstance(rle["counts"], str):
                rle["counts"] = rle["counts"].encode("ascii")
        else:
            raise ValueError("expected a list of polygons or an RLE dict with 'counts' and 'size'")
        if tuple(rle["size"]) != (height, width):
            raise ValueError(f"RLE size {list(rle['size'])} differs from the image's")
        return mask_utils.decode(rle)
    except (ValueError, TypeError, KeyError) as exc:
        raise DatasetError(
            f"{json_file}: annotation id {ann['id']} has an invalid segmentation: "
            f"{_first_line(exc)}; fix or remove the annotation"
        ) from exc


def _area(ann: dict[str, Any]) -> float:
    if "area" in ann:
        return float(ann["area"])
    return float(ann["bbox"][2] * ann["bbox"][3])


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
