"""COCOInstanceDataset: a COCO instances json and its image folder, as torchvision tv_tensors."""

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

from pgtrain.data.coco_check import check_coco, has_area_inside, segmentation_rle
from pgtrain.errors import ConfigError, DatasetError, DatasetNotFoundError, first_line

__all__ = ["COCOInstanceDataset", "load_coco"]

logger = logging.getLogger(__name__)


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
        self.coco = load_coco(json_file, image_root)
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

    def __len__(self) -> int:
        return len(self._images)

    def image_info(self, index: int) -> dict[str, Any]:
        """The json's entry of item `index`'s image (id, file_name, height, width, ...)."""
        return self._images[index]

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
            "area": torch.tensor([float(a["area"]) for a in anns], dtype=torch.float32),
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
                f"cannot read image '{path}' (image id {info['id']}): {first_line(exc)}; "
                f"replace the file or remove the image from {self.json_file} (python "
                f"tools/check_dataset.py --decode --json {self.json_file} --image-root "
                f"{self.image_root} finds every such file before training)"
            ) from exc
        if size != (info["height"], info["width"]):
            raise DatasetError(
                f"image '{path}' is {size[0]}x{size[1]} (HxW, after its EXIF orientation) but "
                f"{self.json_file} says {info['height']}x{info['width']}; fix the json's "
                "height/width or replace the image"
            )
        image = torch.from_numpy(pixels).permute(2, 0, 1).contiguous()
        return tv_tensors.Image(image)


def load_coco(json_file: str, image_root: str | None = None) -> COCO:
    """Reads a COCO instances json the way the dataset and the evaluator both need it: checked
    whole (`check_coco`; the image files too when `image_root` is given) and repaired (missing
    ``iscrowd`` and ``area`` filled; one log line of the repairs), as a pycocotools index.

    Raises:
        DatasetError: naming the file, the image or annotation id and the field.
        DatasetNotFoundError: an image file is missing.
    """
    check = check_coco(json_file, image_root)
    check.raise_if_refused()
    line = check.repairs_line()
    if line:
        logger.info(line)
    return check.coco()


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
        if has_area_inside(ann["bbox"], *sizes[ann["image_id"]]):
            by_image.setdefault(ann["image_id"], []).append(ann)
    return by_image


def _decode_segmentation(ann: dict[str, Any], height: int, width: int, json_file: str) -> Any:
    """Returns the H×W uint8 mask of a polygon, uncompressed-RLE or compressed-RLE annotation
    (checked when the dataset was built; pycocotools may still refuse a corrupt RLE string)."""
    try:
        return mask_utils.decode(segmentation_rle(ann["segmentation"], height, width))
    except (ValueError, TypeError, KeyError) as exc:
        raise DatasetError(
            f"{json_file}: image id {ann['image_id']}, annotation id {ann['id']}: field "
            f"'segmentation' cannot be decoded ({first_line(exc)}); fix or remove the annotation"
        ) from exc
