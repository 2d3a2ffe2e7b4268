"""Detection transforms, aspect-ratio grouping with seek, and the list loaders."""

import itertools
import pickle

import numpy as np
import pytest
import torch
from torch.utils.data import Dataset
from torchvision import tv_tensors
from torchvision.ops import masks_to_boxes

from pgtrain.data.coco import COCOInstanceDataset
from pgtrain.data.detection import (
    build_detection_test_loader,
    build_detection_train_loader,
    build_test_transforms,
    build_train_transforms,
    collate_list,
)
from pgtrain.data.samplers import AspectRatioGroupedBatchSampler, TrainingSampler
from pgtrain.errors import ConfigError


def _mask_boxes(masks):
    return masks_to_boxes(masks) + torch.tensor([0.0, 0.0, 1.0, 1.0])


def _plain(tensor):
    return tensor.as_subclass(torch.Tensor)


def test_flip_keeps_boxes_and_masks_aligned(coco_files):
    json_file, image_root, _ = coco_files
    original = COCOInstanceDataset(json_file, image_root)[0]
    flip = build_train_transforms(min_size=40, max_size=1000, flip_prob=1.0)  # resize x1
    image, target = COCOInstanceDataset(json_file, image_root, transforms=flip)[0]
    assert torch.equal(_plain(image), original[0].flip(-1))
    assert torch.equal(_plain(target["masks"]), original[1]["masks"].flip(-1))
    assert target["boxes"].tolist() == [[30, 5, 50, 15], [5, 20, 20, 32]]  # x -> 60 - x
    # The RLE instance is an exact rectangle, so its flipped mask has exactly the flipped box.
    assert _mask_boxes(target["masks"][1:]).tolist() == target["boxes"][1:].tolist()
    assert target["labels"].tolist() == original[1]["labels"].tolist()
    assert target["orig_size"] == (40, 60) and target["image_id"] == 1


def test_resize_shortest_side_scales_boxes_and_masks_together(coco_files):
    json_file, image_root, _ = coco_files
    double = build_train_transforms(min_size=80, max_size=1000, flip_prob=0.0)
    image, target = COCOInstanceDataset(json_file, image_root, transforms=double)[0]
    assert image.shape == (3, 80, 120) and target["masks"].shape == (2, 80, 120)
    assert target["boxes"].tolist() == [[20, 10, 60, 30], [80, 40, 110, 64]]
    assert _mask_boxes(target["masks"][1:]).tolist() == target["boxes"][1:].tolist()
    assert tuple(target["boxes"].canvas_size) == (80, 120) and target["orig_size"] == (40, 60)
    capped = build_test_transforms(min_size=80, max_size=90)  # the long side caps the scale
    image, target = COCOInstanceDataset(json_file, image_root, transforms=capped)[1]
    assert image.shape == (3, 90, 60) and target["masks"].shape == (1, 90, 60)
    assert torch.allclose(_mask_boxes(target["masks"]), target["boxes"], atol=1.0)


def test_train_sizes_are_drawn_from_min_size(coco_files):
    json_file, image_root, _ = coco_files
    transforms = build_train_transforms(min_size=(20, 40, 60), max_size=1000)
    dataset = COCOInstanceDataset(json_file, image_root, transforms=transforms)
    torch.manual_seed(0)
    heights = {dataset[0][0].shape[1] for _ in range(30)}
    assert heights == {20, 40, 60}


def test_boxes_without_width_are_dropped_with_their_instance_fields():
    image = tv_tensors.Image(torch.zeros(3, 100, 100, dtype=torch.uint8))
    masks = torch.zeros(2, 100, 100, dtype=torch.uint8)
    masks[0, 10:60, 10:11] = 1
    masks[1, 20:60, 20:60] = 1
    target = {
        "boxes": tv_tensors.BoundingBoxes(
            [[10, 10, 10, 60], [20, 20, 60, 60]], format="XYXY", canvas_size=(100, 100)
        ),
        "masks": tv_tensors.Mask(masks),
        "labels": torch.tensor([1, 2]),
        "iscrowd": torch.tensor([0, 0]),
        "area": torch.tensor([50.0, 1600.0]),
        "image_id": 7,
        "orig_size": (100, 100),
    }
    _, out = build_test_transforms(min_size=50, max_size=1000)(image, target)
    assert out["boxes"].tolist() == [[10, 10, 30, 30]]  # the box without width is gone
    assert out["masks"].shape == (1, 50, 50) and out["masks"].sum() == 400
    assert out["labels"].tolist() == [2] and out["area"].tolist() == [1600.0]
    assert out["iscrowd"].tolist() == [0] and out["image_id"] == 7


def test_bad_transform_options_name_the_option():
    with pytest.raises(ConfigError, match="flip_prob=2"):
        build_train_transforms(min_size=(100,), flip_prob=2)
    with pytest.raises(ConfigError, match="min_size=0"):
        build_test_transforms(min_size=0)


def test_dataset_with_transforms_pickles_for_workers(coco_files):
    json_file, image_root, _ = coco_files
    dataset = COCOInstanceDataset(
        json_file, image_root, transforms=build_train_transforms(min_size=40, flip_prob=0.0)
    )
    copy = pickle.loads(pickle.dumps(dataset))
    assert copy[1][1]["boxes"].tolist() == dataset[1][1]["boxes"].tolist()


class _SizedDataset(Dataset):
    """Items are (index, (H, W)); sizes alternate irregularly between wide and tall."""

    def __init__(self, n=23):
        self.image_sizes = [(30, 50) if (i * 7) % 5 < 2 else (50, 30) for i in range(n)]

    def __len__(self):
        return len(self.image_sizes)

    def __getitem__(self, index):
        return index, self.image_sizes[index]


def _is_wide(size):
    return size[1] >= size[0]


def test_grouped_batches_hold_one_orientation_and_seek_equals_skipping():
    sizes = _SizedDataset().image_sizes
    groups = [0 if _is_wide(s) else 1 for s in sizes]

    def make():
        return AspectRatioGroupedBatchSampler(TrainingSampler(len(sizes), seed=3), groups, 4)

    unbroken = list(itertools.islice(iter(make()), 60))
    assert all(len(batch) == 4 for batch in unbroken)
    assert all(len({groups[i] for i in batch}) == 1 for batch in unbroken)
    assert {groups[b[0]] for b in unbroken} == {0, 1}
    # Every index is used: nothing is starved by the grouping.
    assert set(itertools.chain.from_iterable(unbroken)) == set(range(len(sizes)))
    for skip in (1, 7, 33):
        resumed = make()
        resumed.seek(skip)
        assert list(itertools.islice(iter(resumed), 60 - skip)) == unbroken[skip:]


def test_train_loader_yields_grouped_lists_and_resumes():
    dataset = _SizedDataset()
    loader = build_detection_train_loader(dataset, total_batch_size=3, seed=5)
    unbroken = list(itertools.islice(iter(loader), 20))
    assert all(isinstance(batch, list) and len(batch) == 3 for batch in unbroken)
    assert all(len({_is_wide(size) for _, size in batch}) == 1 for batch in unbroken)
    resumed = build_detection_train_loader(dataset, total_batch_size=3, seed=5)
    resumed.batch_sampler.seek(8)  # what the trainer calls when resuming at iteration 8
    assert list(itertools.islice(iter(resumed), 12)) == unbroken[8:]
    other_seed = build_detection_train_loader(dataset, total_batch_size=3, seed=6)
    assert list(itertools.islice(iter(other_seed), 20)) != unbroken


def test_train_loader_without_grouping_and_its_errors():
    dataset = _SizedDataset()
    loader = build_detection_train_loader(dataset, total_batch_size=4, aspect_ratio_grouping=False)
    batches = list(itertools.islice(iter(loader), 6))
    assert all(isinstance(b, list) and len(b) == 4 for b in batches)
    assert any(len({_is_wide(size) for _, size in b}) == 2 for b in batches)  # mixed, ungrouped
    with pytest.raises(ConfigError, match="aspect_ratio_grouping=False"):
        build_detection_train_loader(list(range(5)), total_batch_size=2)
    with pytest.raises(ConfigError, match="total_batch_size=0"):
        build_detection_train_loader(dataset, total_batch_size=0)


def test_test_loader_visits_every_item_once_in_order():
    loader = build_detection_test_loader(_SizedDataset(7), batch_size=2)
    batches = list(loader)
    assert [len(b) for b in batches] == [2, 2, 2, 1]
    assert [index for b in batches for index, _ in b] == list(range(7))
    assert collate_list(((1, 2), (3, 4))) == [(1, 2), (3, 4)]


def _painted_targets(height, width, rng):
    """An image with three ellipses painted in the red, green and blue channels (one each, the
    last touching the right and bottom borders), their masks and boxes, plus a sub-pixel object."""
    from PIL import Image, ImageDraw

    image = np.zeros((height, width, 3), dtype=np.uint8)
    masks = []
    corners_of_objects = [(0.1, 0.1, 0.45, 0.5), (0.5, 0.2, 0.9, 0.6), (0.6, 0.55, 1.0, 1.0)]
    for channel, (x0, y0, x1, y1) in enumerate(corners_of_objects):
        canvas = Image.new("L", (width, height))
        corners = (x0 * width, y0 * height, x1 * width - 1, y1 * height - 1)
        ImageDraw.Draw(canvas).ellipse(corners, fill=1)
        mask = np.asarray(canvas, dtype=np.uint8).copy()
        image[..., channel][mask > 0] = 255
        masks.append(mask)
    masks.append(np.zeros((height, width), dtype=np.uint8))
    masks[-1][int(rng.integers(0, height)), int(rng.integers(0, width))] = 1
    masks = torch.from_numpy(np.stack(masks))
    boxes = _mask_boxes(masks)
    boxes[-1, 2:] = boxes[-1, :2] + 0.6  # a 0.6 px object: small, but a real target
    target = {
        "boxes": tv_tensors.BoundingBoxes(boxes, format="XYXY", canvas_size=(height, width)),
        "masks": tv_tensors.Mask(masks),
        "labels": torch.tensor([1, 2, 3, 4]),
        "iscrowd": torch.zeros(4, dtype=torch.int64),
        "area": masks.flatten(1).sum(1).float(),
    }
    return tv_tensors.Image(torch.from_numpy(image).permute(2, 0, 1).contiguous()), target


@pytest.mark.parametrize("seed", range(4))
def test_every_transform_keeps_each_target_on_its_pixels(seed):
    rng = np.random.default_rng(seed)
    height, width = (int(v) for v in rng.integers(60, 240, size=2))
    image, target = _painted_targets(height, width, rng)
    every = [
        build_train_transforms(min_size=(96, 128, 200, 333), max_size=400, flip_prob=0.5),
        build_train_transforms(min_size=(50, 77), max_size=120, flip_prob=1.0),
        build_test_transforms(min_size=150, max_size=400),
    ]
    torch.manual_seed(seed)
    for transforms in every:
        for _ in range(6):
            img, out = transforms(image, target)
            assert out["labels"].tolist() == [1, 2, 3, 4], "a target was lost"
            assert len(out["masks"]) == len(out["boxes"]) == len(out["area"]) == 4
            for k in range(3):  # painted objects: the mask covers the object's pixels
                mask = out["masks"][k].bool()
                painted = img[k] > 127
                iou = (mask & painted).sum() / (mask | painted).sum()
                assert iou > 0.8, (k, float(iou))
                box = _plain(out["boxes"][k])
                assert torch.allclose(box, _mask_boxes(mask[None].to(torch.uint8))[0], atol=2.0)
            h, w = img.shape[-2:]
            boxes = _plain(out["boxes"])
            assert (boxes[:, 2] > boxes[:, 0]).all() and (boxes[:, 3] > boxes[:, 1]).all()
            assert boxes[:, 2].max() <= w and boxes[:, 3].max() <= h
