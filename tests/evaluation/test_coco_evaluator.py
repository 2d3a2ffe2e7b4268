import json
import logging
import math

import pytest
import torch
from pycocotools.coco import COCO

from pgtrain.errors import ConfigError
from pgtrain.evaluation.coco import RESULTS_FILE, COCOEvaluator
from tests.evaluation._coco_data import (
    CLASS_NAMES,
    IMAGES,
    LABEL_TO_CATEGORY,
    NUM_INSTANCES,
    empty_prediction,
    perfect_predictions,
    write_instances_json,
)

IMAGE_IDS = [im["id"] for im in IMAGES]


@pytest.fixture
def json_file(tmp_path):
    return write_instances_json(str(tmp_path / "instances.json"))


@pytest.fixture
def coco(json_file):
    return COCO(json_file)


class _Dataset:
    """What the evaluator reads from a COCO detection dataset."""

    def __init__(self, coco, json_file, mapping=LABEL_TO_CATEGORY):
        self.coco = coco
        self.json_file = json_file
        self.contiguous_to_category_id = dict(mapping)
        self.class_names = list(CLASS_NAMES)


def _run(evaluator, pairs):
    evaluator.reset()
    for inputs, prediction in pairs:
        evaluator.process([inputs], [prediction])
    return evaluator.evaluate()


def _perfect(coco, **kwargs):
    return [perfect_predictions(coco, i, **kwargs) for i in IMAGE_IDS]


def _shift_boxes(pairs, fraction):
    shifted = []
    for inputs, prediction in pairs:
        boxes = prediction["boxes"].clone()
        dx = fraction * (boxes[:, 2] - boxes[:, 0])
        boxes[:, 0] += dx
        boxes[:, 2] += dx
        shifted.append((inputs, {**prediction, "boxes": boxes}))
    return shifted


def test_perfect_predictions_give_ap_one_for_boxes_and_masks(json_file, coco):
    metrics = _run(COCOEvaluator(json_file), _perfect(coco))
    assert set(metrics) == {"bbox", "segm"}
    for task in ("bbox", "segm"):
        for name in ("AP", "AP50", "AP75", "APs", "APm", "APl"):
            assert metrics[task][name] == pytest.approx(1.0), (task, name)


def test_shifted_boxes_lower_box_ap_to_the_fraction_of_iou_thresholds_they_pass(json_file, coco):
    # Shifting each box by 1/5 of its width gives IoU 0.8 / 1.2 = 2/3 with its ground truth: a
    # hit at IoU thresholds 0.50, 0.55, 0.60, 0.65 and a miss at the six above, so AP = 4/10.
    metrics = _run(COCOEvaluator(json_file), _shift_boxes(_perfect(coco), 0.2))
    assert metrics["bbox"]["AP"] == pytest.approx(0.4)
    assert metrics["bbox"]["AP50"] == pytest.approx(1.0)
    assert metrics["bbox"]["AP75"] == pytest.approx(0.0)
    assert metrics["segm"]["AP"] == pytest.approx(1.0)  # the masks did not move


def test_empty_predictions_give_ap_zero(json_file, coco):
    metrics = _run(COCOEvaluator(json_file), [empty_prediction(coco, i) for i in IMAGE_IDS])
    for task in ("bbox", "segm"):
        assert metrics[task]["AP"] == 0.0
        assert metrics[task]["AP50"] == 0.0
        assert metrics[task]["APl"] == 0.0
    assert math.isnan(metrics["segm"]["mask_area_ratio"])
    assert metrics["segm"]["num_matched"] == 0


def test_nothing_processed_gives_no_metrics(json_file):
    assert COCOEvaluator(json_file).evaluate() == {}


def test_only_processed_images_are_evaluated(json_file, coco):
    # Image 2's objects are never predicted, but image 2 was not processed either.
    metrics = _run(COCOEvaluator(json_file), [perfect_predictions(coco, 1)])
    assert metrics["bbox"]["AP"] == pytest.approx(1.0)
    assert math.isnan(metrics["bbox"]["APl"])  # image 1 has no large objects: undefined


def test_labels_map_to_non_contiguous_category_ids(json_file, coco, tmp_path):
    evaluator = COCOEvaluator(_Dataset(coco, json_file), output_dir=str(tmp_path / "out"))
    metrics = _run(evaluator, _perfect(coco))
    assert metrics["bbox"]["AP"] == pytest.approx(1.0)
    with open(tmp_path / "out" / RESULTS_FILE) as f:
        written = json.load(f)
    assert sorted(r["category_id"] for r in written) == [3, 7, 7, 12]


def test_the_datasets_label_mapping_is_used(json_file, coco):
    swapped = {1: 12, 2: 7, 3: 3}  # labels 1 and 3 now mean other categories
    metrics = _run(COCOEvaluator(_Dataset(coco, json_file, swapped)), _perfect(coco))
    assert metrics["bbox"]["AP"] == pytest.approx(1 / 3)  # only 'square' (label 2) stays right


def test_predictions_on_a_resized_image_are_rescaled_to_orig_size(json_file, coco, tmp_path):
    evaluator = COCOEvaluator(json_file, output_dir=str(tmp_path))
    metrics = _run(evaluator, _perfect(coco, scale=2))
    for task in ("bbox", "segm"):
        assert metrics[task]["AP"] == pytest.approx(1.0), task
    with open(tmp_path / RESULTS_FILE) as f:
        written = {(r["image_id"], r["category_id"]): r for r in json.load(f)}
    assert written[(2, 12)]["bbox"] == [4.0, 4.0, 120.0, 84.0]
    assert written[(2, 12)]["segmentation"]["size"] == [128, 128]


def test_half_size_masks_give_mask_area_ratio_one_half(json_file, coco):
    pairs = []
    for inputs, prediction in _perfect(coco):
        masks = prediction["masks"].clone()
        for i, (x0, _, x1, _) in enumerate(prediction["boxes"].int().tolist()):
            masks[i, :, :, (x0 + x1) // 2 :] = 0  # keep the left half of each rectangle
        pairs.append((inputs, {**prediction, "masks": masks}))
    metrics = _run(COCOEvaluator(json_file), pairs)
    assert metrics["segm"]["mask_area_ratio"] == pytest.approx(0.5)
    assert metrics["segm"]["num_matched"] == NUM_INSTANCES
    assert metrics["segm"]["AP"] < 1.0
    assert metrics["bbox"]["AP"] == pytest.approx(1.0)


def test_mask_area_ratio_matches_same_class_only_and_one_detection_per_object(json_file, coco):
    inputs, prediction = perfect_predictions(coco, 1)
    doubled = {k: torch.cat([v, v]) for k, v in prediction.items()}
    doubled["scores"] = torch.tensor([0.9, 0.9, 0.5, 0.5])
    doubled["labels"] = torch.cat([prediction["labels"], 3 - prediction["labels"]])  # 1 <-> 2
    metrics = _run(COCOEvaluator(json_file), [(inputs, doubled)])
    assert metrics["segm"]["num_matched"] == 2
    assert metrics["segm"]["mask_area_ratio"] == pytest.approx(1.0)


def test_results_json_holds_every_detection_with_rle_strings(json_file, coco, tmp_path):
    out = tmp_path / "eval"
    _run(COCOEvaluator(json_file, output_dir=str(out)), _perfect(coco))
    with open(out / RESULTS_FILE) as f:
        written = json.load(f)
    assert len(written) == NUM_INSTANCES
    for result in written:
        assert set(result) == {"image_id", "category_id", "bbox", "score", "segmentation"}
        assert isinstance(result["segmentation"]["counts"], str)
        assert result["score"] == pytest.approx(0.9)


def test_bbox_only_evaluation_needs_no_masks(json_file, coco):
    pairs = [(inputs, {k: v for k, v in p.items() if k != "masks"}) for inputs, p in _perfect(coco)]
    metrics = _run(COCOEvaluator(json_file, tasks=("bbox",)), pairs)
    assert list(metrics) == ["bbox"]
    assert metrics["bbox"]["AP"] == pytest.approx(1.0)
    with pytest.raises(ConfigError, match=r"tasks=\('bbox',\)"):
        _run(COCOEvaluator(json_file), pairs)


def test_ap_table_is_logged_and_pycocotools_prints_nothing(json_file, coco, caplog, capsys):
    pairs = _perfect(coco)
    capsys.readouterr()
    with caplog.at_level(logging.INFO, logger="pgtrain.evaluation"):
        _run(COCOEvaluator(json_file), pairs)
    assert capsys.readouterr().out == ""
    text = caplog.text
    assert "task | " in text and "AP50" in text and "1.000" in text
    assert "triangle" in text  # per-class table
    assert "mask area of 4 matched detections: 1.000" in text


def test_unknown_task_suggests_the_right_name(json_file):
    with pytest.raises(ConfigError, match="did you mean 'segm'"):
        COCOEvaluator(json_file, tasks=("segmm",))


def test_missing_json_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        COCOEvaluator(str(tmp_path / "nope.json"))


def test_unknown_image_id_and_label_are_clear_errors(json_file, coco):
    (image, target), prediction = perfect_predictions(coco, 1)
    evaluator = COCOEvaluator(json_file)
    with pytest.raises(ConfigError, match="image_id 99 is not in"):
        evaluator.process([(image, {**target, "image_id": 99})], [prediction])
    bad = {**prediction, "labels": torch.tensor([1, 4])}
    with pytest.raises(ConfigError, match="num_classes to 4"):
        evaluator.process([(image, target)], [bad])
    with pytest.raises(ConfigError, match="1 predictions for 2 images"):
        evaluator.process([(image, target), (image, target)], [prediction])


def test_a_json_that_is_not_coco_is_a_clear_error(tmp_path):
    broken = tmp_path / "broken.json"
    broken.write_text("[1, 2")
    with pytest.raises(ConfigError, match="is not a COCO instances file"):
        COCOEvaluator(str(broken))
    no_categories = tmp_path / "no_categories.json"
    no_categories.write_text('{"images": [], "annotations": []}')
    with pytest.raises(ConfigError, match="has no 'categories'"):
        COCOEvaluator(str(no_categories))
