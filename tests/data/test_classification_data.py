"""The classification data: scikit-learn's digits (splits, subsets, augmentation), ImageFolder."""

import numpy as np
import pytest
import torch
from PIL import Image

from pgtrain.data import build_train_loader
from pgtrain.data.classification import DigitsDataset, image_folder_dataset
from pgtrain.data.coco import DatasetError, DatasetNotFoundError
from pgtrain.errors import ConfigError

pytest.importorskip("sklearn", reason="the digits ship with scikit-learn")

NUM_DIGITS = 1797  # scikit-learn's digits


def _digits_of(dataset):
    from pgtrain.data.classification import _load_digits

    return _load_digits()[1][dataset.indices]


def test_digits_samples_are_normalized_image_dicts():
    dataset = DigitsDataset(split="val", image_size=16, channels=3)
    sample = dataset[0]
    assert set(sample) == {"image", "label"}
    image, label = sample["image"], sample["label"]
    assert image.shape == (3, 16, 16) and image.dtype == torch.float32
    assert label.dtype == torch.int64 and label.ndim == 0
    assert image.min() >= -1.0 and image.max() <= 1.0
    assert torch.equal(image[0], image[2])  # grey repeated to every channel
    assert image[:, 0, 0].eq(-1.0).all()  # the scans' corners are background


def test_digits_split_is_stratified_disjoint_and_deterministic():
    train, val = DigitsDataset(split="train"), DigitsDataset(split="val")
    assert len(train) + len(val) == NUM_DIGITS
    assert not set(train.indices) & set(val.indices)
    assert np.array_equal(val.indices, DigitsDataset(split="val").indices)
    assert not np.array_equal(val.indices, DigitsDataset(split="val", seed=1).indices)
    counts = np.bincount(_digits_of(val), minlength=10)
    totals = counts + np.bincount(_digits_of(train), minlength=10)
    assert np.all(np.abs(counts - 0.2 * totals) <= 0.5)  # every digit is split 80/20
    assert torch.equal(train[7]["image"], DigitsDataset(split="train")[7]["image"])


def test_digits_subset_reindexes_labels_and_keeps_the_split():
    full = DigitsDataset(split="val")
    subset = DigitsDataset(split="val", classes=[7, 3])
    assert subset.classes == [7, 3] and subset.num_classes == 2
    digits = _digits_of(subset)
    assert set(digits) == {3, 7}
    labels = torch.stack([subset[i]["label"] for i in range(len(subset))]).numpy()
    assert np.array_equal(labels, np.where(digits == 7, 0, 1))
    # The split does not depend on the subset: its samples are the full val set's 3s and 7s.
    assert np.array_equal(subset.indices, full.indices[np.isin(_digits_of(full), [3, 7])])


def test_pretrain_and_finetune_subsets_are_disjoint():
    first = DigitsDataset(split="train", classes=[0, 1, 2, 3, 4, 5])
    second = DigitsDataset(split="train", classes=[6, 7, 8, 9])
    assert not set(first.indices) & set(second.indices)
    assert int(second[0]["label"]) in range(4)


def test_digits_augmentation_shifts_within_an_eighth_of_the_image():
    plain = DigitsDataset(split="train", image_size=32)
    augmented = DigitsDataset(split="train", image_size=32, augment=True)
    torch.manual_seed(0)
    shifted = [augmented[i]["image"][0] for i in range(8)]
    padded = [torch.nn.functional.pad(plain[i]["image"][0], (4,) * 4, value=-1.0) for i in range(8)]
    found = []
    for image, pad in zip(shifted, padded, strict=True):
        offsets = [
            (top, left)
            for top in range(9)
            for left in range(9)
            if torch.equal(pad[top : top + 32, left : left + 32], image)
        ]
        assert offsets, "an augmented image is not a shift of the original"
        found.append(offsets[0])
    assert len(set(found)) > 1  # random shifts, not a fixed one


def test_digits_batches_through_the_train_loader():
    loader = build_train_loader(
        DigitsDataset(split="train", classes=[1, 2], image_size=16), total_batch_size=4, seed=0
    )
    batch = next(iter(loader))
    assert batch["image"].shape == (4, 3, 16, 16)
    assert batch["label"].dtype == torch.int64 and set(batch["label"].tolist()) <= {0, 1}


@pytest.mark.parametrize(
    "options, key",
    [
        (dict(split="test"), "split"),
        (dict(classes=[3, 3]), "classes"),
        (dict(classes=[4, 10]), "classes"),
        (dict(classes=[]), "classes"),
        (dict(image_size=4), "image_size"),
        (dict(val_fraction=1.0), "val_fraction"),
    ],
)
def test_digits_rejects_bad_options_naming_them(options, key):
    with pytest.raises(ConfigError, match=key):
        DigitsDataset(**options)


@pytest.fixture
def image_folder(tmp_path):
    """Writes root/cat and root/dog with three small random PNGs each (30x40 and 50x36)."""
    rng = np.random.default_rng(0)
    for name in ("dog", "cat"):
        (tmp_path / name).mkdir()
        for i, (h, w) in enumerate([(30, 40), (50, 36), (30, 40)]):
            pixels = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(tmp_path / name / f"{i}.png")
    return tmp_path


def test_image_folder_yields_sample_dicts_with_sorted_class_labels(image_folder):
    dataset = image_folder_dataset(str(image_folder), image_size=24, train=True)
    assert dataset.classes == ["cat", "dog"] and len(dataset) == 6
    torch.manual_seed(0)
    samples = [dataset[i] for i in range(len(dataset))]
    assert [int(s["label"]) for s in samples] == [0, 0, 0, 1, 1, 1]
    for sample in samples:
        assert type(sample["image"]) is torch.Tensor  # not a tv_tensors subclass
        assert sample["image"].shape == (3, 24, 24) and sample["image"].dtype == torch.float32
        assert sample["label"].dtype == torch.int64


def test_image_folder_eval_transform_is_deterministic_and_normalized(image_folder):
    dataset = image_folder_dataset(str(image_folder), image_size=24, train=False)
    first, second = dataset[1]["image"], dataset[1]["image"]
    assert torch.equal(first, second)
    assert first.shape == (3, 24, 24)
    assert first.min() < 0 < first.max()  # ImageNet-normalized, not in [0, 1]


def test_image_folder_errors_name_the_folder(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="nowhere"):
        image_folder_dataset(str(tmp_path / "nowhere"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="empty"):
        image_folder_dataset(str(tmp_path / "empty"))


def _write_pngs(root, names):
    """Writes root/<name>/0.png (8x8) for every name."""
    rng = np.random.default_rng(0)
    for name in names:
        (root / name).mkdir(parents=True)
        Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(root / name / "0.png")


def test_image_folder_val_takes_train_labels_by_class_name(tmp_path):
    """A val set missing 'bird' keeps 'cat' at 1 and 'dog' at 2, as train labels them."""
    _write_pngs(tmp_path / "train", ["bird", "cat", "dog"])
    _write_pngs(tmp_path / "val", ["cat", "dog"])
    train = image_folder_dataset(str(tmp_path / "train"), image_size=8)
    val = image_folder_dataset(
        str(tmp_path / "val"), image_size=8, train=False, classes_from=str(tmp_path / "train")
    )
    assert val.classes == train.classes == ["bird", "cat", "dog"] and val.num_classes == 3
    assert [int(val[i]["label"]) for i in range(len(val))] == [1, 2]


def test_image_folder_val_class_missing_from_train_is_an_error_naming_it(tmp_path):
    _write_pngs(tmp_path / "train", ["cat", "dog"])
    _write_pngs(tmp_path / "val", ["cat", "cow", "dog"])
    with pytest.raises(DatasetError, match=r"'cow'.*not in.*train"):
        image_folder_dataset(
            str(tmp_path / "val"), image_size=8, train=False, classes_from=str(tmp_path / "train")
        )
    with pytest.raises(DatasetNotFoundError, match="nowhere"):
        image_folder_dataset(
            str(tmp_path / "val"), image_size=8, classes_from=str(tmp_path / "nowhere")
        )
