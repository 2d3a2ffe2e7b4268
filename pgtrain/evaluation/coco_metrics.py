"""COCO metrics from results: COCOeval AP per task, per-class AP, mask-area ratio, text tables."""

import copy
import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
from pycocotools import mask as mask_util
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from pgtrain.evaluation.coco_results import capture_stdout

__all__ = [
    "AP_METRICS",
    "evaluate_task",
    "per_class_ap",
    "mask_area_ratio",
    "format_ap_table",
    "format_per_class_table",
]

logger = logging.getLogger(__name__)

AP_METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl")
"""The names of COCOeval's first six summary numbers, in its order."""


def evaluate_task(
    coco_gt: COCO, results: Sequence[Mapping[str, Any]], task: str, image_ids: Iterable[int]
) -> tuple[dict[str, float], COCOeval]:
    """Runs COCOeval for one task ("bbox" or "segm") on the given images.

    AP values are fractions in [0, 1]; one that is undefined (no ground truth in its area range)
    is NaN. No results at all give AP 0 wherever there is ground truth.

    Returns:
        ``{"AP": .., "AP50": .., "AP75": .., "APs": .., "APm": .., "APl": ..}`` and the COCOeval
        object (for per-class AP).
    """
    drop = "segmentation" if task == "bbox" else "bbox"
    # Copies: loadRes writes ids and areas into the dicts it is given. For segm the box is left
    # out so that loadRes takes the area (for APs/APm/APl) from the mask, not from the box.
    task_results = [{k: v for k, v in r.items() if k != drop} for r in results]
    with capture_stdout(logger):
        coco_dt = coco_gt.loadRes(task_results) if task_results else _empty_results(coco_gt)
        coco_eval = COCOeval(coco_gt, coco_dt, task)
        coco_eval.params.imgIds = sorted(image_ids)
        coco_eval.evaluate()
        coco_eval.accumulate()
        coco_eval.summarize()
    stats = {
        name: _defined(value) for name, value in zip(AP_METRICS, coco_eval.stats[:6], strict=True)
    }
    return stats, coco_eval


def _empty_results(coco_gt: COCO) -> COCO:
    # loadRes cannot take an empty list (it looks at the first result to guess the kind).
    coco_dt = COCO()
    coco_dt.dataset = {
        "images": list(coco_gt.dataset.get("images", [])),
        "categories": copy.deepcopy(coco_gt.dataset.get("categories", [])),
        "annotations": [],
    }
    coco_dt.createIndex()
    return coco_dt


def _defined(value: float) -> float:
    return float(value) if value >= 0 else math.nan  # COCOeval writes -1 for "undefined"


def per_class_ap(coco_eval: COCOeval) -> dict[int, float]:
    """Returns category id -> AP (IoU 0.50:0.95, all areas, 100 detections); NaN if undefined."""
    precision = coco_eval.eval["precision"]  # IoU x recall x category x area x max detections
    out = {}
    for k, cat_id in enumerate(coco_eval.params.catIds):
        values = precision[:, :, k, 0, -1]
        values = values[values > -1]
        out[int(cat_id)] = float(values.mean()) if values.size else math.nan
    return out


def mask_area_ratio(
    coco_gt: COCO,
    results: Sequence[Mapping[str, Any]],
    image_ids: Iterable[int],
    iou_threshold: float = 0.5,
) -> tuple[float, int]:
    """Returns the median predicted / ground-truth mask area of matched detections, and their count.

    Per image, detections are matched greedily by descending score to the unmatched non-crowd
    ground truth of the same category with the highest box IoU, if it is at least
    `iou_threshold`. A ratio well below 1 is the "small masks" symptom of an undertrained mask
    head. The median is NaN when nothing matched.
    """
    by_image: dict[int, list[Mapping[str, Any]]] = {}
    for result in results:
        by_image.setdefault(result["image_id"], []).append(result)
    ratios: list[float] = []
    for image_id in image_ids:
        gts = [a for a in coco_gt.imgToAnns.get(image_id, []) if not a.get("iscrowd", 0)]
        dets = sorted(by_image.get(image_id, []), key=lambda r: -r["score"])
        if gts and dets:
            ratios.extend(_matched_ratios(coco_gt, gts, dets, iou_threshold))
    return (float(np.median(ratios)) if ratios else math.nan), len(ratios)


def _matched_ratios(
    coco_gt: COCO,
    gts: list[dict[str, Any]],
    dets: list[Mapping[str, Any]],
    iou_threshold: float,
) -> list[float]:
    ious = mask_util.iou(
        np.array([d["bbox"] for d in dets], dtype=np.float64),
        np.array([g["bbox"] for g in gts], dtype=np.float64),
        [0] * len(gts),
    )
    ious = np.asarray(ious).reshape(len(dets), len(gts))
    same_class = np.array([[d["category_id"] == g["category_id"] for g in gts] for d in dets])
    ious = np.where(same_class, ious, -1.0)
    taken = np.zeros(len(gts), dtype=bool)
    ratios = []
    for i, det in enumerate(dets):
        candidates = np.where(taken, -1.0, ious[i])
        j = int(candidates.argmax())
        if candidates[j] < iou_threshold:
            continue
        taken[j] = True
        gt_area = float(mask_util.area(coco_gt.annToRLE(gts[j])))
        if gt_area > 0:
            ratios.append(float(mask_util.area(det["segmentation"])) / gt_area)
    return ratios


def format_ap_table(metrics: Mapping[str, Mapping[str, float]]) -> str:
    """Formats ``{task: {"AP": .., ...}}`` as a fixed-width table, one row per task."""
    rows = [("task", *AP_METRICS)]
    rows += [(task, *(_fmt(values.get(m)) for m in AP_METRICS)) for task, values in metrics.items()]
    return _table(rows)


def format_per_class_table(
    per_class: Mapping[str, Mapping[int, float]], names: Mapping[int, str]
) -> str:
    """Formats ``{task: {category id: AP}}`` as a table with one row per class."""
    tasks = list(per_class)
    rows = [("category", *(f"{task} AP" for task in tasks))]
    for cat_id, name in names.items():
        rows.append((name, *(_fmt(per_class[task].get(cat_id)) for task in tasks)))
    return _table(rows)


def _fmt(value: float | None) -> str:
    return "-" if value is None or math.isnan(value) else f"{value:.3f}"


def _table(rows: list[tuple[str, ...]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [
        " | ".join(
            cell.ljust(w) if i == 0 else cell.rjust(w)
            for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        )
        for row in rows
    ]
    lines.insert(1, "-+-".join("-" * w for w in widths))
    return "\n".join(lines)
