"""The datasets of a config are checked whole before any process starts (`check_datasets`)."""

import logging

import pytest
from omegaconf import OmegaConf

from pgtrain.config import LazyCall as L
from pgtrain.data import COCOInstanceDataset, DigitsDataset
from pgtrain.data.preflight import check_datasets, coco_datasets
from pgtrain.errors import DatasetError, DatasetNotFoundError
from pgtrain.evaluation import COCOEvaluator
from tests.data.coco_corpus import ann, image, write


def _cfg(train_files, test_files, evaluator_json=None):
    dataloader = {
        "train": {"dataset": L(COCOInstanceDataset)(json_file=train_files[0],
                                                    image_root=train_files[1])},
        "test": {"dataset": L(COCOInstanceDataset)(json_file=test_files[0],
                                                   image_root=test_files[1])},
    }  # fmt: skip
    if evaluator_json:
        dataloader["evaluator"] = L(COCOEvaluator)(dataset_or_json=evaluator_json)
    return OmegaConf.create({"dataloader": dataloader})


def test_a_refused_test_set_is_found_before_training(tmp_path, caplog):
    train = write(tmp_path / "train", [image(1)], [ann(1, 1, [50, 5, 10.5, 10])])
    test = write(tmp_path / "val", [image(1), image(2)], [ann(1, 1, [1, 1, 5, 5])])
    with caplog.at_level(logging.INFO, logger="pgtrain"):
        check_datasets(_cfg(train, test))  # both fine; the train set's repair is logged
    assert any(
        r.getMessage().startswith("dataloader.train.dataset: ") and "1 boxes past" in r.getMessage()
        for r in caplog.records
    )
    (tmp_path / "val" / "images" / "2.png").unlink()
    with pytest.raises(DatasetNotFoundError, match=r"val/instances\.json: 1 of 2 image files"):
        check_datasets(_cfg(train, test))


def test_the_evaluators_own_json_is_checked_too(tmp_path):
    files = write(tmp_path / "a", [image(1)], [ann(1, 1, [1, 1, 5, 5])])
    other = write(tmp_path / "b", [image(1)], [ann(1, 1, [1, 1, 5, 5]), ann(1, 1, [2, 2, 5, 5])])
    cfg = _cfg(files, files, evaluator_json=other[0])
    assert [s.key for s in coco_datasets(cfg)] == [
        "dataloader.train.dataset",
        "dataloader.test.dataset",
        "dataloader.evaluator.dataset_or_json",
    ]
    with pytest.raises(DatasetError, match=r"b/instances\.json: annotation id 1: occurs 2 times"):
        check_datasets(cfg)


def test_other_datasets_are_not_coco(tmp_path):
    cfg = OmegaConf.create({"dataloader": {"train": {"dataset": L(DigitsDataset)(split="train")}}})
    assert list(coco_datasets(cfg)) == []
    check_datasets(OmegaConf.create({}))


def test_train_net_refuses_a_bad_test_set_before_anything_starts(tmp_path):
    """As typed: a test json with a duplicate annotation id used to be found only by the final
    evaluation, after the whole training; now it is one line, exit 2, no output folder."""
    from tests._cli_batch import run_batch

    train = write(tmp_path / "train", [image(1, 64, 64)], [ann(1, 1, [5, 5, 30, 30])])
    test = write(tmp_path / "val", [image(1, 64, 64)],
                 [ann(1, 1, [5, 5, 30, 30]), ann(1, 1, [9, 9, 20, 20])])  # fmt: skip
    out = tmp_path / "out"
    common = ["--config", "projects/maskrcnn/config.py", "model.num_classes=2",
              f"dataloader.train.dataset.json_file={train[0]}",
              f"dataloader.train.dataset.image_root={train[1]}",
              f"dataloader.test.dataset.json_file={test[0]}",
              f"dataloader.test.dataset.image_root={test[1]}",
              f"train.output_dir={out}", "train.max_iter=2"]  # fmt: skip
    training, evaluating = run_batch(
        "tools/train_net.py", [common, [*common, "--eval-only"]], tmp_path
    )
    for result in (training, evaluating):
        assert result.returncode == 2, result.stderr[-2000:]
        assert result.stderr.strip().splitlines() == [
            f"error: {test[0]}: annotation id 1: occurs 2 times (merged exports?); "
            "give every annotation a unique id"
        ]
        assert not out.exists()
