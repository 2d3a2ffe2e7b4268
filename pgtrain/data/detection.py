"""Detection data pipeline: tv_tensors transforms, aspect-ratio grouping, loaders of lists."""

from collections.abc import Sequence
from typing import Any

from torch.utils.data import DataLoader, Dataset
from torchvision import tv_tensors
from torchvision.transforms import v2

from pgtrain.data.loaders import build_test_loader, build_train_loader
from pgtrain.errors import ConfigError

__all__ = [
    "build_detection_test_loader",
    "build_detection_train_loader",
    "build_test_transforms",
    "build_train_transforms",
    "collate_list",
    "DropDegenerateBoxes",
]

# Per-instance tensors that must lose the same rows as the boxes (masks are found by type).
_INSTANCE_FIELDS = ("labels", "iscrowd", "area")
# A box with no more width or height than this is degenerate (Detectron2's box_threshold).
_MIN_BOX_SIDE = 1e-5


def collate_list(batch: list[Any]) -> list[Any]:
    """Returns the samples as a list: detection images differ in size, so nothing is stacked."""
    return list(batch)


class DropDegenerateBoxes:
    """Drops the targets whose box has no width or height left, with their masks, labels,
    iscrowd and area; every box of positive size is kept, however small.

    torchvision's ``SanitizeBoundingBoxes`` cannot keep boxes under one pixel (its ``min_size``
    is at least 1), so an object a resize shrank below a pixel would be lost and its pixels
    trained as background; Detectron2 keeps such boxes too (``filter_empty_instances``).
    """

    def __call__(self, image: Any, target: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
        boxes = target["boxes"]
        xyxy = v2.functional.convert_bounding_box_format(
            boxes, new_format=tv_tensors.BoundingBoxFormat.XYXY
        )
        keep = (xyxy[:, 2] - xyxy[:, 0] > _MIN_BOX_SIDE) & (xyxy[:, 3] - xyxy[:, 1] > _MIN_BOX_SIDE)
        if bool(keep.all()):
            return image, target
        out = dict(target)
        for key, value in target.items():
            if key == "boxes" or key in _INSTANCE_FIELDS or isinstance(value, tv_tensors.Mask):
                subset = value[keep]
                out[key] = (
                    tv_tensors.wrap(subset, like=value)
                    if isinstance(value, tv_tensors.TVTensor)
                    else subset
                )
        return image, out


def build_train_transforms(
    min_size: int | Sequence[int] = (640, 672, 704, 736, 768, 800),
    max_size: int = 1333,
    flip_prob: float = 0.5,
) -> v2.Compose:
    """Returns the training transforms for ``(image, target)`` pairs of tv_tensors.

    The shortest side is resized to a size drawn from `min_size` (the longest side capped by
    `max_size`), then the pair is flipped horizontally with probability `flip_prob`. Boxes and
    masks follow the image; boxes are clipped to the image after each geometric step, then
    degenerate boxes (no width or height left) are dropped together with their masks, labels,
    iscrowd and area; a box shrunk below a pixel by the resize is kept.

    Args:
        min_size: shortest-side sizes to draw from (one per sample).
        max_size: the longest side never exceeds this.
        flip_prob: probability of a horizontal flip.
    """
    sizes = [min_size] if isinstance(min_size, int) else [int(s) for s in min_size]
    if not sizes or min(sizes) <= 0 or max_size <= 0:
        raise ConfigError(
            f"train transforms: min_size={min_size} and max_size={max_size} must be positive"
        )
    if not 0.0 <= flip_prob <= 1.0:
        raise ConfigError(f"train transforms: flip_prob={flip_prob} must be in [0, 1]")
    return v2.Compose(
        [
            v2.RandomShortestSize(min_size=sizes, max_size=max_size),
            v2.ClampBoundingBoxes(),  # float rounding can put a border box past the edge
            v2.RandomHorizontalFlip(p=flip_prob),
            v2.ClampBoundingBoxes(),  # clip before degenerate boxes are dropped
            DropDegenerateBoxes(),
        ]
    )


def build_test_transforms(min_size: int = 800, max_size: int = 1333) -> v2.Compose:
    """Returns the evaluation transforms: resize the shortest side to `min_size`, capped."""
    if min_size <= 0 or max_size <= 0:
        raise ConfigError(
            f"test transforms: min_size={min_size} and max_size={max_size} must be positive"
        )
    # The same size arithmetic as training (a single choice draws nothing that matters).
    return v2.Compose(
        [
            v2.RandomShortestSize(min_size=[min_size], max_size=max_size),
            v2.ClampBoundingBoxes(),  # see build_train_transforms
            DropDegenerateBoxes(),
        ]
    )


def _orientation_groups(dataset: Dataset) -> list[int]:
    sizes = getattr(dataset, "image_sizes", None)
    if sizes is None:
        raise ConfigError(
            f"aspect_ratio_grouping=True needs a dataset with image_sizes ((H, W) per item, as "
            f"COCOInstanceDataset has); {type(dataset).__name__} has none: set "
            "dataloader.train.aspect_ratio_grouping=False"
        )
    return [0 if width >= height else 1 for height, width in sizes]


def build_detection_train_loader(
    dataset: Dataset,
    *,
    total_batch_size: int,
    num_workers: int = 0,
    seed: int = 0,
    aspect_ratio_grouping: bool = True,
) -> DataLoader:
    """Returns an infinite, resumable loader of lists of ``(image, target)`` pairs.

    It is `build_train_loader` (an infinite `TrainingSampler` sharded across processes, the
    loader's own generator) with list batches and, optionally, aspect-ratio grouping: each batch
    holds only wide (W >= H) or only tall images, read from ``dataset.image_sizes``.

    Args:
        dataset: a map-style detection dataset, e.g. `COCOInstanceDataset`.
        total_batch_size: images per iteration summed over all processes.
        num_workers: loader worker processes per training process.
        seed: seeds the sample order and the workers' RNGs.
        aspect_ratio_grouping: group batches by orientation.
    """
    groups = _orientation_groups(dataset) if aspect_ratio_grouping else None
    return build_train_loader(
        dataset,
        total_batch_size=total_batch_size,
        num_workers=num_workers,
        seed=seed,
        collate_fn=collate_list,
        group_ids=groups,
    )


def build_detection_test_loader(
    dataset: Dataset, *, batch_size: int = 1, num_workers: int = 0
) -> DataLoader:
    """Returns a loader over this process's shard of `dataset`, once, in order, as lists.

    A dataset built with ``filter_empty=True`` is refused: evaluation must see the images without
    objects, or the false positives on them are never counted.
    """
    if getattr(dataset, "filter_empty", False):
        raise ConfigError(
            f"dataloader.test.dataset: the {type(dataset).__name__} drops images without objects "
            "(filter_empty=True), so false positives on them would not count; set "
            "dataloader.test.dataset.filter_empty=False"
        )
    return build_test_loader(
        dataset, batch_size=batch_size, num_workers=num_workers, collate_fn=collate_list
    )
