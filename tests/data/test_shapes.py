"""The shapes dataset: deterministic files, COCO content, occlusion, caching, the CLI."""

import filecmp
import json
import os

import numpy as np
import pytest
import torch
from pycocotools import mask as mask_utils
from torchvision.ops import masks_to_boxes

from pgtrain.data import shapes
from pgtrain.data.shapes import CLASS_SETS, default_shapes_root, ensure_shapes, shapes_dataset
from pgtrain.errors import ConfigError, PgtrainError
from tests._loggers import loggers_restored

TINY = {"num_train": 6, "num_val": 3, "image_size": 96, "seed": 0}  # as the shapes_root fixture


def _load(root, set_name, split):
    with open(os.path.join(root, set_name, f"{split}.json")) as f:
        return json.load(f)


def _same_tree(a, b):
    comparison = filecmp.dircmp(a, b)
    if comparison.left_only or comparison.right_only:
        return False
    _, mismatch, errors = filecmp.cmpfiles(a, b, comparison.common_files, shallow=False)
    subfolders = [(os.path.join(a, d), os.path.join(b, d)) for d in comparison.common_dirs]
    return not mismatch and not errors and all(_same_tree(x, y) for x, y in subfolders)


def test_same_seed_gives_identical_files_and_another_seed_differs(shapes_root, tmp_path):
    again = ensure_shapes(str(tmp_path / "again"), **TINY)
    assert _same_tree(shapes_root, again)
    other = ensure_shapes(str(tmp_path / "other"), **{**TINY, "seed": 1})
    assert not filecmp.cmp(
        os.path.join(shapes_root, "A", "train", "000000.png"),
        os.path.join(other, "A", "train", "000000.png"),
        shallow=False,
    )


def test_layout_and_disjoint_class_sets(shapes_root):
    names = {}
    for set_name in ("A", "B"):
        for split, count in (("train", 6), ("val", 3)):
            data = _load(shapes_root, set_name, split)
            assert len(data["images"]) == count
            assert sorted(os.listdir(os.path.join(shapes_root, set_name, split))) == [
                image["file_name"] for image in data["images"]
            ]
            names[set_name] = {c["id"]: c["name"] for c in data["categories"]}
    assert sorted(names["A"].values()) == sorted(CLASS_SETS["A"]) and len(names["A"]) == 3
    assert sorted(names["B"].values()) == sorted(CLASS_SETS["B"]) and len(names["B"]) == 4
    assert not set(names["A"]) & set(names["B"])  # category ids differ too


def test_annotations_are_visible_parts_with_exact_boxes(shapes_root):
    data = _load(shapes_root, "B", "train")
    sizes = {image["id"]: (image["height"], image["width"]) for image in data["images"]}
    assert all(max(s) == 96 and 60 <= min(s) <= 96 for s in sizes.values())
    assert {s[0] > s[1] for s in sizes.values()} == {True, False}  # wide and tall images
    overlapping_boxes = 0
    for image_id, size in sizes.items():
        anns = [a for a in data["annotations"] if a["image_id"] == image_id]
        assert anns, "every image has at least one instance"
        masks = np.stack([mask_utils.decode(a["segmentation"]) for a in anns])
        assert masks.shape[1:] == size
        assert masks.sum(axis=0).max() == 1  # visible parts never overlap: occlusion applied
        for ann, mask in zip(anns, masks, strict=True):
            assert ann["area"] == mask.sum() >= 64 and ann["iscrowd"] == 0
            ys, xs = np.nonzero(mask)
            assert ann["bbox"] == [xs.min(), ys.min(), np.ptp(xs) + 1, np.ptp(ys) + 1]
        boxes = torch.tensor([a["bbox"] for a in anns])
        for i in range(len(anns)):
            for j in range(i):
                lo = torch.maximum(boxes[i, :2], boxes[j, :2])
                hi = torch.minimum(boxes[i, :2] + boxes[i, 2:], boxes[j, :2] + boxes[j, 2:])
                overlapping_boxes += bool((hi > lo).all())
    assert overlapping_boxes > 0  # shapes do overlap


def test_shapes_dataset_loads_consistent_items(shapes_root):
    dataset = shapes_dataset(set="B", split="val", root=shapes_root, num_classes=5, **TINY)
    assert len(dataset) == 3
    assert dataset.class_names == ["star", "hexagon", "cross", "ring"]  # category id order
    for image, target in dataset:
        assert image.shape[-2:] == target["masks"].shape[-2:] == target["orig_size"]
        edges = masks_to_boxes(target["masks"]) + torch.tensor([0.0, 0.0, 1.0, 1.0])
        assert torch.equal(edges, target["boxes"].as_subclass(torch.Tensor))
        assert 1 <= target["labels"].min() and target["labels"].max() <= 4
    with pytest.raises(ConfigError, match="model.num_classes=4"):
        shapes_dataset(set="A", root=shapes_root, num_classes=5, **TINY)
    with pytest.raises(ConfigError, match="set='C' is not one of"):
        shapes_dataset(set="C", root=shapes_root, **TINY)


def test_generation_is_cached_and_regenerated_when_parameters_change(tmp_path):
    root = str(tmp_path / "shapes")
    small = {"num_train": 1, "num_val": 1, "image_size": 64}
    ensure_shapes(root, **small)
    json_file = os.path.join(root, "A", "val.json")
    before = os.stat(json_file).st_mtime_ns
    ensure_shapes(root, **small)
    assert os.stat(json_file).st_mtime_ns == before  # nothing regenerated
    ensure_shapes(root, **{**small, "num_val": 2})
    assert len(_load(root, "A", "val")["images"]) == 2
    assert sorted(os.listdir(tmp_path)) == ["shapes"]  # no temporary folder left behind


def test_a_concurrent_finished_generation_is_kept(tmp_path):
    root = str(tmp_path / "shapes")
    ensure_shapes(root, num_train=1, num_val=1, image_size=64)
    inode = os.stat(root).st_ino
    params = shapes._read_stamp(root)
    shapes._generate(root, params)  # a second process that finishes last
    assert os.stat(root).st_ino == inode and sorted(os.listdir(tmp_path)) == ["shapes"]


def test_interrupted_generation_leaves_no_dataset(tmp_path, monkeypatch):
    calls = []

    def crash(*args):
        calls.append(args)
        if len(calls) == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(shapes, "_write_split", crash)
    with pytest.raises(KeyboardInterrupt):
        ensure_shapes(str(tmp_path / "shapes"), num_train=1, num_val=1, image_size=64)
    assert os.listdir(tmp_path) == []


def test_foreign_folder_is_never_overwritten(tmp_path):
    (tmp_path / "mine.txt").write_text("precious")
    with pytest.raises(PgtrainError, match="not a shapes dataset; pick an empty"):
        ensure_shapes(str(tmp_path), num_train=1, num_val=1, image_size=64)
    assert os.listdir(tmp_path) == ["mine.txt"]
    with pytest.raises(ConfigError, match="image_size=8"):
        ensure_shapes(str(tmp_path / "new"), image_size=8)


def test_default_root_follows_pgtrain_data(monkeypatch, tmp_path):
    monkeypatch.setenv("PGTRAIN_DATA", str(tmp_path))
    assert default_shapes_root() == os.path.join(str(tmp_path), "shapes")
    monkeypatch.delenv("PGTRAIN_DATA")
    assert default_shapes_root().endswith(os.path.join(".cache", "pgtrain", "shapes"))


def test_cli_generates_with_its_options(tmp_path, capsys):
    out = str(tmp_path / "cli")
    argv = ["--out", out, "--num-train", "2", "--num-val", "1", "--size", "64", "--seed", "4"]
    with loggers_restored():  # the command line sets up the logger for its progress lines
        shapes.main(argv)
    printed = capsys.readouterr().out
    assert f"set B (star, hexagon, cross, ring): {os.path.join(out, 'B')}" in printed
    assert "Generating shapes: 6 images in " in printed
    expected = {"num_train": 2, "num_val": 1, "image_size": 64, "seed": 4}
    assert {k: shapes._read_stamp(out)[k] for k in TINY} == expected
    assert len(_load(out, "A", "train")["images"]) == 2
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "x").write_text("")
    with loggers_restored(), pytest.raises(SystemExit) as info:
        shapes.main(["--out", str(tmp_path / "foreign"), "--num-train", "1"])
    assert info.value.code == 2
    assert "not a shapes dataset" in capsys.readouterr().err
