"""COCOInstanceDataset: a COCO instances json and its image folder, as torchvision tv_tensors."""

import contextlib
import io
import json
import logging
import os
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from torch.utils.data import Dataset
from torchvision import tv_tensors

from pgtrain.errors import ConfigError, DatasetError, DatasetNotFoundError

__all__ = ["COCOInstanceDataset", "load_coco"]

logger = logging.getLogger(__name__)

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
    ``orig_size`` ((H, W) of the image file). Images are read in their EXIF orientation (as
    annotation tools show them); boxes are clipped to the image. Crowd regions and boxes with no
    area inside the image are left out of the targets (torchvision's losses cannot ignore them);
    evaluation reads them from the json. Annotations without ``iscrowd`` or ``area`` get
    ``iscrowd=0`` and the area of their segmentation, so pycocotools can evaluate them.

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
        filter_empty: bool = False,
    ) -> None:
        """Reads and checks the json; images are decoded lazily in `__getitem__`.

        Args:
            json_file: a COCO instances json (images, annotations with segmentation, categories).
            image_root: the folder the images' ``file_name`` entries are relative to.
            transforms: called as ``transforms(image, target)``, e.g. `build_train_transforms`.
            num_classes: if given, the model's class count including the background; it must be
                the number of categories + 1.
            filter_empty: drop images without a usable (non-crowd, non-degenerate) annotation,
                as training may want; evaluation must keep them (the default), or false
                positives on them are never counted.
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
        self.coco = load_coco(json_file)
        data = self.coco.dataset
        categories = sorted(data["categories"], key=lambda c: c["id"])
        self.class_names = [c["name"] for c in categories]
        self.contiguous_to_category_id = {i + 1: c["id"] for i, c in enumerate(categories)}
        self._label_of = {c["id"]: i + 1 for i, c in enumerate(categories)}
        _check_num_classes(num_classes, len(categories), json_file)
        self.filter_empty = filter_empty
        self._anns = _usable_annotations(data)
        self._images = [
            image for image in data["images"] if not filter_empty or self._anns.get(image["id"])
        ]
        self.image_sizes = [(int(im["height"]), int(im["width"])) for im in self._images]
        _check_image_files(data["images"], image_root, json_file)

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
        boxes[:, 0::2] = boxes[:, 0::2].clamp(0, width)  # clip, as Detectron2's mapper does
        boxes[:, 1::2] = boxes[:, 1::2].clamp(0, height)
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
                # Phone photos store pixels unrotated plus an EXIF orientation; annotation tools
                # (and the json's sizes) use the displayed orientation.
                shown = ImageOps.exif_transpose(file)
                size = (shown.height, shown.width)
                pixels = np.array(shown.convert("RGB"))
        except (OSError, ValueError, SyntaxError) as exc:  # PIL's errors for broken files
            raise DatasetError(
                f"cannot read image '{path}' (image id {info['id']}): {_first_line(exc)}; "
                f"replace the file or remove the image from {self.json_file}"
            ) from exc
        if size != (info["height"], info["width"]):
            raise DatasetError(
                f"image '{path}' is {size[0]}x{size[1]} (HxW, after its EXIF orientation) but "
                f"{self.json_file} says {info['height']}x{info['width']}; fix the json's "
                "height/width or replace the image"
            )
        image = torch.from_numpy(pixels).permute(2, 0, 1).contiguous()
        return tv_tensors.Image(image)


def load_coco(json_file: str) -> COCO:
    """Reads a COCO instances json the way the dataset and the evaluator both need it: checked
    (fields, unique ids, segmentations) and repaired (missing ``iscrowd`` and ``area`` filled,
    one log line), as a pycocotools index.

    Raises:
        DatasetError: naming the file, the image or annotation id and the field.
    """
    data = _load_json(json_file)
    _check_fields(data, json_file)
    _check_segmentations(data, json_file)
    _fill_iscrowd_and_area(data, json_file)
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
        coco = COCO()
        coco.dataset = data
        coco.createIndex()
    return coco


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
    for key, name in (("images", "image"), ("annotations", "annotation")):
        _check_unique_ids(data[key], name, json_file)
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


def _check_image_files(images: list[dict[str, Any]], image_root: str, json_file: str) -> None:
    """Raises a one-line DatasetNotFoundError when image files of the json are missing, before
    training rather than when the sampler reaches them."""
    missing = [im for im in images if not os.path.isfile(os.path.join(image_root, im["file_name"]))]
    if missing:
        first = missing[0]
        raise DatasetNotFoundError(
            f"{json_file}: {len(missing):,} of {len(images):,} image files are not under "
            f"image_root '{image_root}' (first: image id {first['id']}, '{first['file_name']}'); "
            "check image_root, or remove those images from the json"
        )


def _check_unique_ids(entries: list[dict[str, Any]], name: str, json_file: str) -> None:
    seen: set[Any] = set()
    for entry in entries:
        if entry["id"] in seen:
            raise DatasetError(
                f"{json_file}: {name} id {entry['id']} occurs more than once (merged exports?); "
                f"give every {name} a unique id"
            )
        seen.add(entry["id"])


def _check_segmentations(data: dict[str, Any], json_file: str) -> None:
    """Raises a one-line DatasetError for the first malformed segmentation, before training."""
    sizes = {im["id"]: (im["height"], im["width"]) for im in data["images"]}
    for ann in data["annotations"]:
        problem = _segmentation_problem(ann["segmentation"], sizes[ann["image_id"]])
        if problem:
            raise DatasetError(
                f"{json_file}: image id {ann['image_id']}, annotation id {ann['id']}: field "
                f"'segmentation' {problem}; fix or remove the annotation"
            )


def _segmentation_problem(segm: Any, size: tuple[int, int]) -> str | None:
    if isinstance(segm, list):
        if not segm:
            return "is an empty polygon list"
        for polygon in segm:
            numbers = isinstance(polygon, list) and all(isinstance(v, int | float) for v in polygon)
            if not numbers or len(polygon) < 6 or len(polygon) % 2:
                return "has a polygon that is not [x0, y0, x1, y1, x2, y2, ...] (3+ points)"
        return None
    if isinstance(segm, dict) and "counts" in segm and "size" in segm:
        if list(segm["size"]) != list(size):
            return f"has RLE size {list(segm['size'])} but the image is {list(size)} (HxW)"
        return None
    return "is neither a list of polygons nor an RLE dict with 'counts' and 'size'"


def _fill_iscrowd_and_area(data: dict[str, Any], json_file: str) -> None:
    """Fills missing ``iscrowd`` (0) and ``area`` (of the segmentation) in place; logs a line."""
    sizes = {im["id"]: (im["height"], im["width"]) for im in data["images"]}
    no_crowd = no_area = 0
    for ann in data["annotations"]:
        if "iscrowd" not in ann:
            ann["iscrowd"] = 0
            no_crowd += 1
        if "area" not in ann:
            ann["area"] = _segmentation_area(ann, *sizes[ann["image_id"]])
            no_area += 1
    if no_crowd or no_area:
        logger.info(
            "%s: repaired %d annotations without 'iscrowd' (set to 0) and %d without 'area' "
            "(the area of their segmentation)",
            json_file,
            no_crowd,
            no_area,
        )


def _segmentation_area(ann: dict[str, Any], height: int, width: int) -> float:
    segm = ann["segmentation"]
    if isinstance(segm, list):
        rle = mask_utils.merge(mask_utils.frPyObjects(segm, height, width))
    elif isinstance(segm["counts"], list):
        rle = mask_utils.frPyObjects(segm, height, width)
    else:
        rle = {"size": segm["size"], "counts": segm["counts"]}
        if isinstance(rle["counts"], str):
            rle["counts"] = rle["counts"].encode("ascii")
    return float(mask_utils.area(rle))


def _check_num_classes(num_classes: int | None, num_categories: int, json_file: str) -> None:
    if num_classes is None or num_classes == num_categories + 1:
        return
    raise ConfigError(
        f"{json_file} has {num_categories} categories but num_classes={num_classes}; the "
        f"model's num_classes counts the background: set model.num_classes={num_categories + 1}"
        " (and the dataset's num_classes, if given, to the same value)"
    )


def _usable_annotations(data: dict[str, Any]) -> dict[int, list[dict[str, Any]]]:
    """Groups the non-crowd annotations whose box, clipped to the image, has an area."""
    sizes = {im["id"]: (im["height"], im["width"]) for im in data["images"]}
    by_image: dict[int, list[dict[str, Any]]] = {}
    for ann in data["annotations"]:
        if ann.get("iscrowd", 0):
            continue
        height, width = sizes[ann["image_id"]]
        x, y, w, h = ann["bbox"]
        if min(x + w, width) > max(x, 0) and min(y + h, height) > max(y, 0):
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
