"""Image classification data: scikit-learn's bundled digits, and a user's own ImageFolder.

Both yield samples ``{"image": float32 C×H×W tensor, "label": int64 scalar tensor}``, which
torch's default collation turns into ``{"image": B×C×H×W, "label": B}`` batches, the input of
`pgtrain.modeling.ImageClassifier` and `pgtrain.evaluation.ClassificationEvaluator`.

The digits (1,797 real 8×8 scans of the digits 0-9) are read from a file inside the
scikit-learn wheel, so nothing is downloaded; upsampled to 32×32 they train a small ViT on 2 CPU
cores in minutes. A `classes` subset with labels re-indexed from 0 gives the two-stage story:
pre-train on some digits, then fine-tune with a new head on the others.
"""

import functools
import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset
from torchvision import datasets
from torchvision.transforms import v2

from pgtrain.errors import ConfigError, DatasetError, DatasetNotFoundError, PgtrainError
from pgtrain.utils.checks import is_whole

__all__ = ["DigitsDataset", "ImageFolderClassification", "image_folder_dataset"]

_SPLITS = ("train", "val")
_NUM_DIGITS = 10
_DIGITS_MAX = 16.0  # the scans' pixel values are 0..16
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


@functools.cache
def _load_digits() -> tuple[np.ndarray, np.ndarray]:
    """Returns scikit-learn's digits as (N×8×8 float32 in [0, 1], N int64 digits)."""
    try:
        from sklearn.datasets import load_digits  # imported here: only this dataset needs it
    except ImportError as e:
        raise PgtrainError(
            "the digits dataset needs scikit-learn, which ships the data: pip install scikit-learn"
        ) from e
    images, digits = load_digits(return_X_y=True)
    images = (images.reshape(-1, 8, 8) / _DIGITS_MAX).astype(np.float32)
    return images, digits.astype(np.int64)


def _split_indices(digits: np.ndarray, val_fraction: float, seed: int) -> dict[str, np.ndarray]:
    """Splits every digit's samples by a seeded permutation of their own (a stratified split).

    Each digit draws from its own generator, so the split of a digit does not depend on which
    other digits a subset keeps: the val samples of ``classes=[5, 6]`` are those of the full set.
    """
    train, val = [], []
    for digit in range(_NUM_DIGITS):
        members = np.flatnonzero(digits == digit)
        order = np.random.default_rng([seed, digit]).permutation(members)
        num_val = int(round(len(members) * val_fraction))
        val.append(order[:num_val])
        train.append(order[num_val:])
    return {"train": np.sort(np.concatenate(train)), "val": np.sort(np.concatenate(val))}


def _check_classes(classes: Sequence[int] | None) -> list[int]:
    if classes is None:
        return list(range(_NUM_DIGITS))
    chosen = list(classes) if isinstance(classes, Sequence) and not isinstance(classes, str) else []
    valid = all(not isinstance(c, bool) and isinstance(c, int | np.integer) for c in chosen)
    if not chosen or not valid or len(set(chosen)) != len(chosen):
        raise ConfigError(
            f"digits: classes={classes!r} must be a non-empty list of distinct digits, e.g. "
            "[5, 6, 7, 8, 9]"
        )
    if not all(0 <= c < _NUM_DIGITS for c in chosen):
        raise ConfigError(f"digits: classes={chosen} may only hold the digits 0..9")
    return [int(c) for c in chosen]


class DigitsDataset(Dataset):
    """scikit-learn's 8×8 digits, upsampled to `image_size`, as classification samples.

    Images are scaled to [0, 1], upsampled bilinearly, normalized to [-1, 1] (background -1) and
    repeated to `channels` channels. Labels are positions in `classes`: with
    ``classes=[5, 6, 7, 8, 9]`` the digit 5 has label 0. The train / val split is stratified and
    depends only on `val_fraction` and `seed`.

    Args:
        split: "train" or "val".
        classes: the digits to keep, in label order; None keeps 0..9.
        image_size: the side of the square images, in pixels (at least 8).
        channels: channels of the images (3 for a model made for RGB).
        val_fraction: the share of every digit's samples in "val", in (0, 1).
        seed: seeds the split.
        augment: random shifts by up to 1/8 of the image side (an original pixel at 64 px), for
            training; drawn from torch's RNG, which the loader seeds per worker.

    Attributes:
        classes: the digits, in label order.
        num_classes: ``len(classes)``.
        indices: the samples' positions in scikit-learn's array (for checking splits).
    """

    def __init__(
        self,
        *,
        split: str = "train",
        classes: Sequence[int] | None = None,
        image_size: int = 32,
        channels: int = 3,
        val_fraction: float = 0.2,
        seed: int = 0,
        augment: bool = False,
    ) -> None:
        if split not in _SPLITS:
            raise ConfigError(f"digits: split='{split}' is not one of {list(_SPLITS)}")
        if not is_whole(image_size, at_least=8):
            raise ConfigError(f"digits: image_size={image_size!r} must be an integer >= 8")
        if not is_whole(channels, at_least=1):
            raise ConfigError(f"digits: channels={channels!r} must be a positive integer")
        if not isinstance(val_fraction, int | float) or not 0 < val_fraction < 1:
            raise ConfigError(f"digits: val_fraction={val_fraction!r} must be in (0, 1)")
        self.classes = _check_classes(classes)
        self.num_classes = len(self.classes)
        self._channels = channels
        self._max_shift = image_size // 8 if augment else 0
        images, digits = _load_digits()
        indices = _split_indices(digits, float(val_fraction), seed)[split]
        self.indices = indices[np.isin(digits[indices], self.classes)]
        pixels = torch.from_numpy(images[self.indices]).unsqueeze(1)
        self._images = F.interpolate(
            pixels, size=(image_size, image_size), mode="bilinear", align_corners=False
        ).clamp_(0.0, 1.0)
        label_of = {digit: label for label, digit in enumerate(self.classes)}
        self._labels = torch.tensor([label_of[int(d)] for d in digits[self.indices]])

    def __len__(self) -> int:
        return len(self._labels)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        image = self._images[index]
        if self._max_shift:
            image = _random_shift(image, self._max_shift)
        image = (image - 0.5) / 0.5
        return {"image": image.repeat(self._channels, 1, 1), "label": self._labels[index]}


def _random_shift(image: torch.Tensor, max_shift: int) -> torch.Tensor:
    """Shifts a C×H×W image by up to `max_shift` pixels each way, filling with 0 (background)."""
    height, width = image.shape[-2:]
    padded = F.pad(image, (max_shift,) * 4)
    top, left = torch.randint(0, 2 * max_shift + 1, (2,)).tolist()
    return padded[:, top : top + height, left : left + width]


def _find_classes(root: str) -> list[str]:
    """Returns the sorted class folder names of `root` (one-line errors naming it)."""
    if not os.path.isdir(root):
        raise DatasetNotFoundError(
            f"image folder '{root}' does not exist; point the dataset's root at a folder "
            "with one sub-folder of images per class"
        )
    try:
        return datasets.folder.find_classes(root)[0]
    except FileNotFoundError as e:  # no class folders
        raise DatasetError(f"image folder '{root}': {e}") from e


def _class_indices(root: str, classes_from: str | None) -> tuple[list[str], dict[str, int]]:
    """Returns (class names in label order, label of each of `root`'s class folders).

    With `classes_from` the names and labels are that folder's (the train split's), matched to
    `root`'s folders by name, so a class missing from `root` shifts no other label.
    """
    own = _find_classes(root)
    names = own if classes_from is None else _find_classes(os.path.expanduser(classes_from))
    index = {name: label for label, name in enumerate(names)}
    extra = [name for name in own if name not in index]
    if extra:
        raise DatasetError(
            f"image folder '{root}': class folder(s) {extra} are not in '{classes_from}' (its "
            f"classes: {names}); remove them or add them to the training data"
        )
    return names, {name: index[name] for name in own}


class _FolderWithLabels(datasets.ImageFolder):
    """torchvision's ImageFolder with given labels for its class folders."""

    def __init__(self, root: str, class_to_idx: dict[str, int], **kwargs: Any) -> None:
        self._given = class_to_idx
        super().__init__(root, **kwargs)

    def find_classes(self, directory: str) -> tuple[list[str], dict[str, int]]:
        return sorted(self._given, key=self._given.__getitem__), dict(self._given)


class ImageFolderClassification(Dataset):
    """torchvision's ImageFolder (``root/<class>/<image>``) yielding pgtrain's sample dicts.

    Args:
        root: the folder with one sub-folder per class; labels follow the sorted folder names.
        transform: turns a PIL image into a float C×H×W tensor.
        classes_from: the training split's folder, for a validation split: labels follow its
            sorted class folder names, matched by name (a class it lacks is an error).

    Attributes:
        classes: the class names, in label order.
        num_classes: ``len(classes)``.
    """

    def __init__(
        self,
        root: str,
        *,
        transform: Callable[[Any], torch.Tensor],
        classes_from: str | None = None,
    ) -> None:
        root = os.path.expanduser(root)
        self.classes, class_to_idx = _class_indices(root, classes_from)
        try:
            self._folder = _FolderWithLabels(root, class_to_idx, transform=transform)
        except FileNotFoundError as e:  # no images in a class folder
            raise DatasetError(f"image folder '{root}': {e}") from e
        self.num_classes = len(self.classes)

    def __len__(self) -> int:
        return len(self._folder)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        image, label = self._folder[index]
        return {"image": image, "label": torch.tensor(label, dtype=torch.int64)}


def image_folder_dataset(
    root: str,
    *,
    image_size: int = 224,
    train: bool = True,
    min_scale: float = 0.35,
    mean: Sequence[float] = _IMAGENET_MEAN,
    std: Sequence[float] = _IMAGENET_STD,
    classes_from: str | None = None,
) -> ImageFolderClassification:
    """Returns a user's ImageFolder data with the usual ViT transforms, as sample dicts.

    Training: a random resized crop (area `min_scale`..1 of the image) to `image_size` and a
    horizontal flip. Evaluation: a resize of the short side to ``image_size / 0.875`` and a
    center crop. Both end with normalization by `mean` and `std` (ImageNet's by default).

    Args:
        root: the folder with one sub-folder of images per class.
        image_size: the side of the square crops, in pixels.
        train: random (training) or deterministic (evaluation) transforms.
        min_scale: the smallest crop area, as a share of the image, for training.
        mean: per-channel means subtracted after scaling pixels to [0, 1].
        std: per-channel standard deviations divided by.
        classes_from: for a validation split, the training split's folder: its class-to-label
            mapping is used, matched by folder name (e.g. ``"${dataloader.train.dataset.root}"``).
    """
    if not is_whole(image_size, at_least=1):
        raise ConfigError(f"image folder: image_size={image_size!r} must be a positive integer")
    if not isinstance(min_scale, int | float) or not 0 < min_scale <= 1:
        raise ConfigError(f"image folder: min_scale={min_scale!r} must be in (0, 1]")
    if train:
        geometry = [
            v2.RandomResizedCrop(image_size, scale=(min_scale, 1.0), antialias=True),
            v2.RandomHorizontalFlip(),
        ]
    else:
        geometry = [
            v2.Resize(int(round(image_size / 0.875)), antialias=True),
            v2.CenterCrop(image_size),
        ]
    transform = v2.Compose(
        [
            v2.ToImage(),
            *geometry,
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(mean=list(mean), std=list(std)),
            v2.ToPureTensor(),  # a plain tensor, as the digits give
        ]
    )
    return ImageFolderClassification(root, transform=transform, classes_from=classes_from)
