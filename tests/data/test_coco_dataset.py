"""COCOInstanceDataset: items of the shared contract, mask formats, crowd, and bad inputs."""

import json
import os

import pytest
import torch
from torchvision import tv_tensors
from torchvision.ops import masks_to_boxes

from pgtrain.data.coco import COCOInstanceDataset, DatasetError, DatasetNotFoundError
from pgtrain.errors import ConfigError, PgtrainError


def _mask_boxes(masks):
    """Boxes of masks as pixel edges (x0, y0, x1 + 1, y1 + 1), the convention of COCO bboxes."""
    return masks_to_boxes(masks) + torch.tensor([0.0, 0.0, 1.0, 1.0])


def test_item_follows_the_contract(coco_files):
    json_file, image_root, _ = coco_files
    dataset = COCOInstanceDataset(json_file, image_root, num_classes=4, filter_empty=True)
    assert len(dataset) == 2  # image 3 has only a crowd annotation: filtered for training
    assert dataset.class_names == ["class3", "class7", "class9"]
    assert dataset.contiguous_to_category_id == {1: 3, 2: 7, 3: 9}
    assert dataset.image_sizes == [(40, 60), (60, 40)]
    assert dataset.json_file == json_file and dataset.coco.getImgIds() == [1, 2, 3]
    image, target = dataset[0]
    assert isinstance(image, tv_tensors.Image) and image.shape == (3, 40, 60)
    assert image.dtype == torch.uint8
    assert isinstance(target["boxes"], tv_tensors.BoundingBoxes)
    assert target["boxes"].format == tv_tensors.BoundingBoxFormat.XYXY
    assert tuple(target["boxes"].canvas_size) == (40, 60)
    assert isinstance(target["masks"], tv_tensors.Mask) and target["masks"].dtype == torch.uint8
    # The crowd region (id 3) is left out; the polygon (cat 7) and uncompressed RLE (cat 3) stay.
    assert target["labels"].tolist() == [2, 1] and target["labels"].dtype == torch.int64
    assert target["boxes"].tolist() == [[10, 5, 30, 15], [40, 20, 55, 32]]
    assert target["masks"].shape == (2, 40, 60)
    assert target["iscrowd"].tolist() == [0, 0] and target["iscrowd"].dtype == torch.int64
    assert target["area"].tolist() == [200.0, 180.0]
    assert target["image_id"] == 1 and target["orig_size"] == (40, 60)


def test_masks_match_boxes_for_polygon_and_both_rles(coco_files):
    json_file, image_root, _ = coco_files
    dataset = COCOInstanceDataset(json_file, image_root)
    _, first = dataset[0]
    # Uncompressed RLE: exactly the rectangle.
    assert first["masks"][1].sum() == 15 * 12
    assert _mask_boxes(first["masks"][1:]).tolist() == first["boxes"][1:].tolist()
    # Polygon: rasterised, so within a pixel of its box.
    assert torch.allclose(_mask_boxes(first["masks"][:1]), first["boxes"][:1], atol=1.0)
    _, second = dataset[1]  # compressed RLE (counts as a string) on a tall image
    assert second["masks"].shape == (1, 60, 40) and second["masks"].sum() == 20 * 40
    assert _mask_boxes(second["masks"]).tolist() == second["boxes"].tolist() == [[5, 10, 25, 50]]


def test_images_without_annotations_are_kept_for_evaluation(coco_files):
    json_file, image_root, _ = coco_files
    dataset = COCOInstanceDataset(json_file, image_root, filter_empty=False)
    assert len(dataset) == 3
    image, target = dataset[2]
    assert image.shape == (3, 40, 60)
    assert target["boxes"].shape == (0, 4) and target["masks"].shape == (0, 40, 60)
    assert target["labels"].shape == (0,) and target["image_id"] == 3


def test_transforms_are_applied_to_image_and_target(coco_files):
    json_file, image_root, _ = coco_files

    def half(image, target):
        return image[:, ::2], {**target, "labels": target["labels"] * 10}

    image, target = COCOInstanceDataset(json_file, image_root, transforms=half)[0]
    assert image.shape == (3, 20, 60) and target["labels"].tolist() == [20, 10]


def _rewrite(coco_files, change):
    json_file, image_root, data = coco_files
    change(data)
    with open(json_file, "w") as f:
        json.dump(data, f)
    return json_file, image_root


def test_missing_json_and_missing_image_folder(coco_files, tmp_path):
    json_file, image_root, _ = coco_files
    with pytest.raises(DatasetNotFoundError, match="json_file '.*nope.json' does not exist"):
        COCOInstanceDataset(str(tmp_path / "nope.json"), image_root)
    with pytest.raises(FileNotFoundError, match="image_root '.*nowhere' is not a folder"):
        COCOInstanceDataset(json_file, str(tmp_path / "nowhere"))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d.pop("annotations"), "has no 'annotations' list"),
        (lambda d: d.pop("categories"), "has no 'categories' list"),
        (lambda d: d["annotations"][1].pop("bbox"), "annotation id 2: has no 'bbox'"),
        (lambda d: d["annotations"][0].pop("segmentation"), "annotation id 1: has no 'segmen"),
        (lambda d: d["annotations"][3].pop("category_id"), "annotation id 4: has no 'category_id"),
        (lambda d: d["images"][0].pop("file_name"), "image id 1: has no 'file_name'"),
        (lambda d: d["annotations"][0].update(category_id=5), "category_id 5, which is not in"),
        (lambda d: d["annotations"][0].update(image_id=42), "image_id 42, which is not in"),
        (lambda d: d["annotations"][0].update(bbox=[1, 2]), r"'bbox' is \[1, 2\]; expected"),
        (lambda d: d["annotations"][0].update(bbox=[1, 2, "3", 4]), r"'bbox' is \[1, 2, '3', 4\]"),
        (lambda d: d["images"].append(5), r"images\[3\]: is not a json object"),
    ],
)
def test_json_without_required_fields(coco_files, change, message):
    json_file, image_root = _rewrite(coco_files, change)
    with pytest.raises(DatasetError, match=message) as info:
        COCOInstanceDataset(json_file, image_root)
    assert json_file in str(info.value) and "\n" not in str(info.value)


def test_invalid_json_and_invalid_segmentation(coco_files):
    json_file, image_root, _ = coco_files
    bad = os.path.join(os.path.dirname(json_file), "bad.json")
    with open(bad, "w") as f:
        f.write("{not json")
    with pytest.raises(DatasetError, match="is not valid json"):
        COCOInstanceDataset(bad, image_root)
    json_file, image_root = _rewrite(
        coco_files, lambda d: d["annotations"][0].update(segmentation={"size": [40, 60]})
    )
    # Found when the dataset is built, not at the first read of the image.
    with pytest.raises(DatasetError, match="image id 1, annotation id 1: field 'segmentation'"):
        COCOInstanceDataset(json_file, image_root)


def test_unreadable_or_missing_image_names_the_file(coco_files):
    json_file, image_root, _ = coco_files
    with open(os.path.join(image_root, "1.png"), "wb") as f:
        f.write(b"this is not a png")
    # Found when the dataset is built (its header is read), not when the sampler reaches it.
    with pytest.raises(DatasetError, match=r"image id 1, '1\.png': cannot be read as an image"):
        COCOInstanceDataset(json_file, image_root)
    dataset = COCOInstanceDataset.__new__(COCOInstanceDataset)  # a file broken after the build
    dataset.image_root, dataset.json_file = image_root, json_file
    with pytest.raises(DatasetError, match=r"cannot read image '.*1\.png' \(image id 1\)"):
        dataset._read_image({"id": 1, "file_name": "1.png", "height": 40, "width": 60})
    # A missing file is found when the dataset is built, not when the sampler reaches it.
    os.remove(os.path.join(image_root, "1.png"))
    os.remove(os.path.join(image_root, "2.png"))
    with pytest.raises(DatasetNotFoundError, match=r"2 of 3 image files .*image id 1, '1\.png'"):
        COCOInstanceDataset(json_file, image_root)


def _taller_first_image_with_polygon_only(data):
    data["images"][0].update(height=41)  # RLEs of image 1 would disagree at build time
    data["annotations"] = [a for a in data["annotations"] if a["id"] not in (2, 3)]


def test_image_size_must_match_the_json(coco_files):
    json_file, image_root = _rewrite(coco_files, _taller_first_image_with_polygon_only)
    with pytest.raises(DatasetError, match="is 40x60 .* says 41x60"):
        COCOInstanceDataset(json_file, image_root)[0]


def test_num_classes_must_count_the_background(coco_files):
    json_file, image_root, _ = coco_files
    with pytest.raises(ConfigError, match="has 3 categories but num_classes=3.*num_classes=4"):
        COCOInstanceDataset(json_file, image_root, num_classes=3)
    with pytest.raises(PgtrainError):
        COCOInstanceDataset(json_file, image_root, num_classes=91)
