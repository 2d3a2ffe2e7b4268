"""COCOEvaluator: COCO box and mask AP with pycocotools, over all processes."""

import json
import logging
import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

from iopath.common.file_io import g_pathmgr

from pgtrain.errors import ConfigError, PgtrainError
from pgtrain.evaluation.coco_metrics import (
    evaluate_task,
    format_ap_table,
    format_per_class_table,
    mask_area_ratio,
    per_class_ap,
)
from pgtrain.evaluation.coco_results import load_ground_truth, prediction_to_coco_results
from pgtrain.evaluation.evaluator import DatasetEvaluator
from pgtrain.utils import comm
from pgtrain.utils.suggest import did_you_mean

__all__ = ["COCOEvaluator", "RESULTS_FILE"]

logger = logging.getLogger(__name__)

RESULTS_FILE = "coco_instances_results.json"
"""The file name, in ``output_dir``, of all detections in the COCO results format."""

_TASKS = ("bbox", "segm")


class COCOEvaluator(DatasetEvaluator):
    """COCO AP of detections (``bbox``) and instance masks (``segm``) against an instances json.

    `process` takes a detection loader batch (a list of ``(image, target)``) and the model's list
    of prediction dicts, maps labels 1..K back to the json's category ids, rescales boxes and
    masks from the size of the image the model saw to ``target["orig_size"]`` and encodes masks
    as RLE. `evaluate` gathers the results of every process, evaluates them on rank 0 on the
    images that were processed, and returns the same dict on every rank::

        {"bbox": {"AP": .., "AP50": .., "AP75": .., "APs": .., "APm": .., "APl": ..},
         "segm": {..., "mask_area_ratio": .., "num_matched": ..}}

    AP values are fractions in [0, 1] (NaN where undefined, e.g. APl without large objects).
    ``mask_area_ratio`` is the median predicted / ground-truth mask area of detections matched
    to ground truth (box IoU >= 0.5, same class); well below 1 it is the "small masks" symptom
    of an undertrained mask head; ``num_matched`` is the number of those detections.

    Args:
        dataset_or_json: a COCO detection dataset (with ``coco``, ``contiguous_to_category_id``,
            ``class_names``) or the path of an instances json (labels 1..K are then the json's
            category ids in sorted order).
        tasks: which of "bbox" and "segm" to evaluate.
        output_dir: where rank 0 writes ``coco_instances_results.json``; None writes nothing.
        mask_threshold: mask probability above which a pixel belongs to the instance.
    """

    def __init__(
        self,
        dataset_or_json: Any,
        *,
        tasks: Sequence[str] = _TASKS,
        output_dir: str | None = None,
        mask_threshold: float = 0.5,
    ) -> None:
        self._tasks = _check_tasks(tasks)
        self._gt = load_ground_truth(dataset_or_json)
        self._output_dir = output_dir
        self._mask_threshold = mask_threshold
        self._results: dict[int, list[dict[str, Any]]] = {}

    def reset(self) -> None:
        self._results = {}

    def process(self, inputs: Sequence[Any], outputs: Sequence[Mapping[str, Any]]) -> None:
        if len(inputs) != len(outputs):
            raise ConfigError(
                f"COCOEvaluator got {len(outputs)} predictions for {len(inputs)} images; the "
                "model must return one prediction dict per (image, target) of the batch"
            )
        for (image, target), prediction in zip(inputs, outputs, strict=True):
            image_id = int(target["image_id"])
            image_info = self._gt.coco.imgs.get(image_id)
            if image_info is None:
                raise ConfigError(
                    f"image_id {image_id} is not in '{self._gt.source}'; evaluate with the json "
                    "the test dataset was loaded from"
                )
            orig_size = target.get("orig_size")
            if orig_size is None:
                orig_size = (image_info["height"], image_info["width"])
            self._results[image_id] = prediction_to_coco_results(
                prediction,
                image_id=image_id,
                given_size=tuple(image.shape[-2:]),
                orig_size=tuple(int(s) for s in orig_size),
                label_to_category_id=self._gt.label_to_category_id,
                with_masks="segm" in self._tasks,
                mask_threshold=self._mask_threshold,
            )

    def evaluate(self) -> dict[str, Any]:
        gathered = comm.gather(self._results)
        metrics, error, failure = None, None, None
        if comm.is_main_process():
            try:
                metrics = self._evaluate_results(_merge(gathered))
            except Exception as e:  # re-raised below, after the other ranks learnt of it
                failure = e
                error = f"{type(e).__name__}: {e}"
        # Every rank returns (or raises) what rank 0 found, so none is left waiting.
        metrics, error = comm.all_gather((metrics, error))[0]
        if failure is not None:
            raise failure
        if error is not None:
            raise PgtrainError(f"COCO evaluation failed on rank 0: {error}")
        return metrics

    def _evaluate_results(self, by_image: dict[int, list[dict[str, Any]]]) -> dict[str, Any]:
        if not by_image:
            logger.warning("COCOEvaluator: no images were processed; nothing to evaluate")
            return {}
        image_ids = sorted(by_image)
        results = [r for image_id in image_ids for r in by_image[image_id]]
        if self._output_dir is not None:
            self._write_results(results)
        metrics: dict[str, Any] = {}
        per_class: dict[str, dict[int, float]] = {}
        for task in self._tasks:
            metrics[task], coco_eval = evaluate_task(self._gt.coco, results, task, image_ids)
            per_class[task] = per_class_ap(coco_eval)
        if "segm" in self._tasks:
            ratio, matched = mask_area_ratio(self._gt.coco, results, image_ids)
            metrics["segm"]["mask_area_ratio"] = ratio
            metrics["segm"]["num_matched"] = matched
        self._log(metrics, per_class, len(by_image), len(results))
        return metrics

    def _write_results(self, results: list[dict[str, Any]]) -> None:
        g_pathmgr.mkdirs(self._output_dir)
        path = os.path.join(self._output_dir, RESULTS_FILE)
        with g_pathmgr.open(path, "w") as f:
            json.dump(results, f)
        logger.info("Wrote %d COCO results to %s", len(results), path)

    def _log(
        self,
        metrics: Mapping[str, Mapping[str, float]],
        per_class: Mapping[str, Mapping[int, float]],
        num_images: int,
        num_results: int,
    ) -> None:
        logger.info(
            "COCO evaluation of %d detections on %d images:\n%s",
            num_results,
            num_images,
            format_ap_table(metrics),
        )
        if "segm" in metrics:
            ratio = metrics["segm"]["mask_area_ratio"]
            logger.info(
                "Median predicted / ground-truth mask area of %d matched detections: %s",
                metrics["segm"]["num_matched"],
                "-" if math.isnan(ratio) else f"{ratio:.3f}",
            )
        names = {
            cat_id: self._gt.class_names[label - 1]
            if label - 1 < len(self._gt.class_names)
            else str(cat_id)
            for label, cat_id in sorted(self._gt.label_to_category_id.items())
        }
        logger.info("Per-class AP:\n%s", format_per_class_table(per_class, names))


def _check_tasks(tasks: Sequence[str]) -> tuple[str, ...]:
    if isinstance(tasks, str):
        tasks = (tasks,)
    for task in tasks:
        if task not in _TASKS:
            raise ConfigError(
                f"COCOEvaluator tasks: unknown task '{task}'{did_you_mean(task, _TASKS)}; "
                f"choose from {list(_TASKS)}"
            )
    if not tasks:
        raise ConfigError(f"COCOEvaluator tasks is empty; choose from {list(_TASKS)}")
    return tuple(dict.fromkeys(tasks))


def _merge(gathered: list[dict[int, list[dict[str, Any]]]]) -> dict[int, list[dict[str, Any]]]:
    # An image seen by several ranks (a padded sampler) is counted once: the first rank's copy.
    merged: dict[int, list[dict[str, Any]]] = {}
    for per_rank in gathered:
        for image_id, results in per_rank.items():
            merged.setdefault(image_id, results)
    return merged
