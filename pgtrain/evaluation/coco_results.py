"""COCO ground truth for an evaluator, and detection predictions turned into COCO results.

A result is one detection as the COCO results json holds it: ``image_id``, the json's
``category_id``, ``bbox`` (XYWH, original image pixels), ``score`` and, for masks,
``segmentation`` (compressed RLE whose ``counts`` is a str, so it can be written as json).
"""

import contextlib
import io
import logging
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from iopath.common.file_io import g_pathmgr
from pycocotools import mask as mask_util
from pycocotools.coco import COCO

from pgtrain.data.coco import load_coco
from pgtrain.errors import ConfigError, DatasetError

__all__ = ["CocoGroundTruth", "load_ground_truth", "prediction_to_coco_results", "capture_stdout"]

logger = logging.getLogger(__name__)

# Masks are resized in chunks: N full-size float masks of a large image would need gigabytes.
_MASK_CHUNK = 16


@contextlib.contextmanager
def capture_stdout(log: logging.Logger = logger) -> Iterator[None]:
    """Sends what pycocotools prints to stdout to `log` at debug level instead of the console."""
    buffer = io.StringIO()
    try:
        with contextlib.redirect_stdout(buffer):
            yield
    finally:
        text = buffer.getvalue().strip()
        if text:
            log.debug("pycocotools:\n%s", text)


@dataclass
class CocoGroundTruth:
    """The annotations an evaluator compares against and how model labels map onto them.

    Attributes:
        coco: the pycocotools COCO object of the instances json.
        label_to_category_id: model label (1..K) -> the json's category id.
        class_names: class name of label i + 1 at index i.
        source: the json path (or a description of the dataset) for error messages.
    """

    coco: COCO
    label_to_category_id: dict[int, int]
    class_names: list[str]
    source: str


def load_ground_truth(dataset_or_json: Any) -> CocoGroundTruth:
    """Returns the COCO ground truth of a detection dataset or of an instances json path.

    A dataset provides ``coco`` (or ``json_file``) and, optionally, ``contiguous_to_category_id``
    and ``class_names``; without them (and for a json path) the json's category ids, sorted, are
    labels 1..K.

    Raises:
        ConfigError: the json is missing or has no categories, or the dataset has neither
            ``coco`` nor ``json_file``.
    """
    if isinstance(dataset_or_json, str | os.PathLike):
        source = os.fspath(dataset_or_json)
        coco, mapping, names = _load_json(source), None, None
    else:
        coco = getattr(dataset_or_json, "coco", None)
        source = getattr(dataset_or_json, "json_file", None) or type(dataset_or_json).__name__
        if coco is None:
            if getattr(dataset_or_json, "json_file", None) is None:
                raise ConfigError(
                    f"COCOEvaluator got a {type(dataset_or_json).__name__} without 'coco' or "
                    "'json_file'; pass a COCO detection dataset or the path of its instances json"
                )
            coco = _load_json(source)
        mapping = getattr(dataset_or_json, "contiguous_to_category_id", None)
        names = getattr(dataset_or_json, "class_names", None)
    category_ids = sorted(coco.cats)
    if not category_ids:
        raise ConfigError(f"COCO json '{source}' has no 'categories'; add the category list")
    if mapping is None:
        mapping = {label: cat_id for label, cat_id in enumerate(category_ids, start=1)}
    mapping = {int(k): int(v) for k, v in mapping.items()}
    unknown = sorted(set(mapping.values()) - set(category_ids))
    if unknown:
        raise ConfigError(
            f"contiguous_to_category_id names category ids {unknown} that are not in "
            f"'{source}'; build the dataset and the evaluator from the same json"
        )
    if names is None:
        names = [coco.cats[mapping[label]].get("name", str(label)) for label in sorted(mapping)]
    return CocoGroundTruth(coco, mapping, list(names), source)


def _load_json(json_file: str) -> COCO:
    if not g_pathmgr.exists(json_file):
        raise ConfigError(
            f"COCO json '{json_file}' does not exist; pass the instances json of the dataset"
        )
    try:  # checked and repaired as the dataset reads it (hand-made files lack iscrowd, area)
        return load_coco(g_pathmgr.get_local_path(json_file))
    except DatasetError as e:
        raise ConfigError(
            f"COCO json '{json_file}' is not a COCO instances file ({e}); pass the instances json"
        ) from e


def prediction_to_coco_results(
    prediction: Mapping[str, torch.Tensor],
    *,
    image_id: int,
    given_size: tuple[int, int],
    orig_size: tuple[int, int],
    label_to_category_id: Mapping[int, int],
    with_masks: bool,
    mask_threshold: float = 0.5,
) -> list[dict[str, Any]]:
    """Converts one image's detections to COCO results in the image's original pixels.

    Args:
        prediction: ``boxes`` (N x 4, XYXY), ``labels`` (1..K), ``scores`` and, when `with_masks`,
            ``masks`` (N x 1 x H x W or N x H x W probabilities), all in the coordinates of the
            image the model was given.
        image_id: the COCO image id.
        given_size: (H, W) of the image the model was given.
        orig_size: (H, W) of the image file; boxes and masks are rescaled to it.
        label_to_category_id: model label -> the json's category id.
        with_masks: also encode ``masks`` as RLE ``segmentation``.
        mask_threshold: probability above which a mask pixel is foreground.

    Raises:
        ConfigError: a key is missing or a label has no category (the model's ``num_classes`` does
            not fit the dataset).
    """
    required = ("boxes", "labels", "scores") + (("masks",) if with_masks else ())
    missing = [key for key in required if key not in prediction]
    if missing:
        hint = (
            "; evaluate with tasks=('bbox',) for a box-only model" if missing == ["masks"] else ""
        )
        raise ConfigError(
            f"prediction for image {image_id} has no {missing}: COCOEvaluator expects torchvision "
            f"detection outputs (boxes, labels, scores, masks){hint}"
        )
    boxes = prediction["boxes"].detach().float().cpu().reshape(-1, 4)
    if len(boxes) == 0:
        return []
    scale_y, scale_x = orig_size[0] / given_size[0], orig_size[1] / given_size[1]
    boxes = boxes * torch.tensor([scale_x, scale_y, scale_x, scale_y])
    boxes[:, 2:] -= boxes[:, :2]  # XYXY -> XYWH
    category_ids = _category_ids(prediction["labels"], label_to_category_id, image_id)
    scores = prediction["scores"].detach().float().cpu().tolist()
    results = [
        {"image_id": image_id, "category_id": cat, "bbox": box, "score": score}
        for cat, box, score in zip(category_ids, boxes.tolist(), scores, strict=True)
    ]
    if with_masks:
        rles = _encode_masks(prediction["masks"], orig_size, mask_threshold)
        for result, rle in zip(results, rles, strict=True):
            result["segmentation"] = rle
    return results


def _category_ids(labels: torch.Tensor, mapping: Mapping[int, int], image_id: int) -> list[int]:
    out = []
    for label in labels.detach().cpu().tolist():
        if label not in mapping:
            raise ConfigError(
                f"prediction for image {image_id} has label {label}, but the dataset's labels are "
                f"1..{len(mapping)}; set the model's num_classes to {len(mapping) + 1} "
                "(background included)"
            )
        out.append(mapping[label])
    return out


def _encode_masks(
    masks: torch.Tensor, orig_size: tuple[int, int], threshold: float
) -> list[dict[str, Any]]:
    masks = masks.detach().cpu()
    if masks.dim() == 4:
        masks = masks[:, 0]
    size = (int(orig_size[0]), int(orig_size[1]))
    rles = []
    for start in range(0, len(masks), _MASK_CHUNK):
        chunk = masks[start : start + _MASK_CHUNK].float()
        if tuple(chunk.shape[-2:]) != size:
            chunk = F.interpolate(chunk[:, None], size=size, mode="bilinear", align_corners=False)
            chunk = chunk[:, 0]
        binary = (chunk > threshold).to(torch.uint8).numpy()
        # pycocotools encodes H x W x N masks stored in Fortran order.
        rles.extend(mask_util.encode(np.asfortranarray(binary.transpose(1, 2, 0))))
    for rle in rles:
        rle["counts"] = rle["counts"].decode("utf-8")  # bytes cannot go into json
    return rles
