"""The Mask R-CNN project end to end, tiny: shapes data, training with evaluation, fine-tuning."""

import json
import os

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# Tiny and fast: 128 px images, few of them, slim everything.
TINY = [
    "shapes.num_train=24",
    "shapes.num_val=8",
    "shapes.image_size=128",
    "model.min_size=128",
    "model.max_size=128",
    "model.backbone.fpn_channels=32",
    "model.box_head.representation_size=64",
    "model.mask_head.conv_dim=32",
    "dataloader.train.dataset.transforms.min_size=[112,128]",
    "dataloader.train.dataset.transforms.max_size=128",
    "dataloader.train.total_batch_size=2",
    "train.log_period=5",
]


def evaluations(run_dir):
    lines = (run_dir / "metrics.json").read_text().splitlines()
    return [r for r in map(json.loads, lines) if "segm/AP" in r]


@pytest.mark.slow
def test_tiny_training_with_evaluation_then_fine_tuning(tmp_path, run_tool):
    data, base, ft = tmp_path / "data", tmp_path / "base", tmp_path / "ft"
    common = [f"shapes.root={data}", *TINY]
    run_tool(
        "train_net.py",
        "--config",
        "projects/maskrcnn/config.py",
        f"train.output_dir={base}",
        "train.max_iter=20",
        "train.eval_period=10",
        "train.checkpoint.period=10",
        *common,
    )
    results = evaluations(base)
    assert [r["iteration"] for r in results] == [10, 20]  # iterations done
    for key in ("bbox/AP", "bbox/AP50", "segm/AP", "segm/AP75"):
        assert isinstance(results[-1][key], float), key  # evaluated, not undefined (null)
    # The written detections are COCO results for the validation images, with masks.
    val_ids = {im["id"] for im in json.loads((data / "A" / "val.json").read_text())["images"]}
    detections = json.loads((base / "coco_instances_results.json").read_text())
    assert detections and {d["image_id"] for d in detections} <= val_ids
    assert all("segmentation" in d and 0 < d["score"] <= 1 for d in detections)
    log = (base / "log.txt").read_text()
    assert "parameters came pretrained with the model" in log
    assert "new " in log and "rules[0]" in log  # the fresh rule's group in the table

    # Fine-tune on set B: the predictors change shape and are exactly the fresh parameters.
    run_tool(
        "train_net.py",
        "--config",
        "projects/maskrcnn/finetune_config.py",
        f"train.output_dir={ft}",
        f"train.init_checkpoint={base}/model_final.pth",
        "train.max_iter=4",
        "train.eval_period=4",
        *common,
    )
    log = (ft / "log.txt").read_text()
    table = log[log.index("param groups") :]
    new_row = next(line for line in table.splitlines() if line.startswith("new "))
    assert new_row.split()[1] == "6"  # cls_score, bbox_pred, mask_fcn_logits: weight and bias
    saved = torch.load(ft / "model_final.pth", weights_only=True)
    assert sorted(saved["fresh"]) == sorted(
        f"roi_heads.{m}.{p}"
        for m in (
            "box_predictor.cls_score",
            "box_predictor.bbox_pred",
            "mask_predictor.mask_fcn_logits",
        )
        for p in ("weight", "bias")
    )
    assert evaluations(ft)

    # The predictions PNG over validation images.
    out = tmp_path / "pred.png"
    run_tool(
        "visualize.py",
        "--config",
        "projects/maskrcnn/config.py",
        f"train.output_dir={base}",
        "--num-images",
        "4",
        "--out",
        str(out),
        *common,
    )
    assert out.read_bytes().startswith(b"\x89PNG")
