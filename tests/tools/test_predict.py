"""tools/predict.py on real photos (scikit-learn's two sample images) with the main Mask R-CNN
config made tiny: drawn images, COCO results pycocotools loads, EXIF orientation, the score
threshold, inputs in any mix, one-line errors, and nothing written outside --output."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools import mask as mask_util
from pycocotools.coco import COCO

from pgtrain.config import LazyConfig, instantiate
from pgtrain.errors import PgtrainError
from tests._loggers import loggers_restored
from tools import predict

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIG = "projects/maskrcnn/config.py"
# Small, no download: 128 px inside the model, an untrained backbone.
TINY = ["model.backbone.pretrained=False", "model.min_size=128", "model.max_size=128"]
CATEGORIES = [{"id": 11, "name": "eleven"}, {"id": 3, "name": "three"}, {"id": 7, "name": "seven"}]


def _sample_images_folder():
    sklearn_datasets = pytest.importorskip("sklearn.datasets")
    folder = os.path.join(os.path.dirname(sklearn_datasets.__file__), "images")
    assert sorted(f for f in os.listdir(folder) if f.endswith(".jpg")) == [
        "china.jpg",
        "flower.jpg",
    ]
    return folder


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """Weights of a freshly built model (random heads detect at threshold 0), a COCO json whose
    category ids are not 1..K, and a folder with a photo stored unrotated plus an EXIF tag
    next to the same photo stored as displayed (lossless PNGs: identical pixels)."""
    tmp = tmp_path_factory.mktemp("predict")
    photos = _sample_images_folder()
    cfg = LazyConfig.apply_overrides(LazyConfig.load(CONFIG), TINY)
    torch.manual_seed(0)
    weights = tmp / "weights.pth"
    torch.save({"model": instantiate(cfg.model).state_dict()}, weights)
    categories = tmp / "categories.json"
    categories.write_text(json.dumps({"images": [], "annotations": [], "categories": CATEGORIES}))
    exif = tmp / "exif"
    exif.mkdir()
    stored = Image.open(os.path.join(photos, "flower.jpg")).convert("RGB")
    tag = Image.Exif()
    tag[0x0112] = 6  # Orientation: rotate 90 degrees clockwise to display
    stored.save(exif / "flower_rotated.png", exif=tag.tobytes())
    stored.transpose(Image.Transpose.ROTATE_270).save(exif / "flower_shown.png")
    return {
        "tmp": tmp,
        "photos": photos,
        "photos_listing": sorted(os.listdir(photos)),
        "weights": str(weights),
        "json": str(categories),
    }


def _run(setup, out, inputs, *extra, threshold="0", run_dir="run"):
    argv = [
        "--config",
        CONFIG,
        "--weights",
        setup["weights"],
        "--input",
        *inputs,
        *TINY,  # overrides right after --input: they must not be taken for inputs
        "--output",
        str(out),
        "--score-threshold",
        threshold,
        "--device",
        "cpu",
        f"dataloader.test.dataset.json_file={setup['json']}",
        f"train.output_dir={setup['tmp'] / run_dir}",
        *extra,
    ]
    with loggers_restored():
        return predict.main(argv)


def _load(out):
    images = json.loads((out / "images.json").read_text())
    results = json.loads((out / "coco_results.json").read_text())
    return images, results


@pytest.fixture(scope="module")
def first(setup):
    """Folder, glob, a file again and a second folder, in two batches of two, threshold 0."""
    photos, out = setup["photos"], setup["tmp"] / "out"
    inputs = [
        photos,
        f"{photos}/*.jpg",
        os.path.join(photos, "china.jpg"),
        str(setup["tmp"] / "exif"),
    ]
    summary = _run(setup, out, inputs, "--batch-size", "2")
    return out, summary


def test_one_drawn_image_per_input_and_results_pycocotools_loads(setup, first):
    out, summary = first
    images, results = _load(out)
    names = ["china.jpg", "flower.jpg", "flower_rotated.png", "flower_shown.png"]
    # Each file once (the glob and the repeated file added nothing), in input order.
    assert [os.path.basename(im["file_name"]) for im in images["images"]] == names
    assert sorted(p.name for p in out.iterdir()) == sorted(
        names + ["coco_results.json", "images.json"]
    )
    assert summary == {"images": 4, "detections": len(results), "output": str(out)}
    # The dataset's own category ids and names, labels 1..K mapped as the COCO evaluator does.
    assert images["categories"] == [
        {"id": 3, "name": "three"},
        {"id": 7, "name": "seven"},
        {"id": 11, "name": "eleven"},
    ]
    gt = COCO()
    gt.dataset = {**images, "annotations": []}
    gt.createIndex()
    dt = gt.loadRes(str(out / "coco_results.json"))
    assert len(dt.getAnnIds()) == len(results) > 0
    sizes = {im["id"]: (im["height"], im["width"]) for im in images["images"]}
    for image_id, (h, w) in sizes.items():
        mine = [r for r in results if r["image_id"] == image_id]
        assert mine, f"no detection on image {image_id}"
        for r in mine:
            x, y, bw, bh = r["bbox"]
            assert 0 <= x and 0 <= y and bw >= 0 and bh >= 0
            assert x + bw <= w + 1e-3 and y + bh <= h + 1e-3
            assert r["category_id"] in (3, 7, 11) and 0 <= r["score"] <= 1
            assert tuple(r["segmentation"]["size"]) == (h, w)
            assert isinstance(r["segmentation"]["counts"], str)
    # The drawn image is the input's size and differs from it where detections were drawn.
    china = np.asarray(Image.open(os.path.join(setup["photos"], "china.jpg")).convert("RGB"))
    drawn = np.asarray(Image.open(out / "china.jpg"))
    assert drawn.shape == china.shape
    best = max((r for r in results if r["image_id"] == 1), key=lambda r: r["score"])
    region = mask_util.decode(best["segmentation"]).astype(bool)
    if not region.any():  # an empty mask: its box is drawn all the same
        x, y, bw, bh = (int(v) for v in best["bbox"])
        region[y : y + bh + 1, x : x + bw + 1] = True
    diff = np.abs(drawn.astype(int) - china.astype(int)).mean(axis=2)
    assert diff[region].mean() > 15


def test_boxes_and_drawings_are_in_the_exif_displayed_orientation(setup, first):
    out, _ = first
    images, results = _load(out)
    info = {os.path.basename(im["file_name"]): im for im in images["images"]}
    stored = Image.open(os.path.join(setup["photos"], "flower.jpg"))
    assert (info["flower_rotated.png"]["width"], info["flower_rotated.png"]["height"]) == (
        stored.height,
        stored.width,
    )
    rotated = np.asarray(Image.open(out / "flower_rotated.png"))
    shown = np.asarray(Image.open(out / "flower_shown.png"))
    assert rotated.shape == (stored.width, stored.height, 3)
    # The tagged file predicts exactly as the same photo stored as displayed.
    np.testing.assert_array_equal(rotated, shown)
    by_id = {}
    for r in results:
        by_id.setdefault(r["image_id"], []).append(r)
    a, b = by_id[info["flower_rotated.png"]["id"]], by_id[info["flower_shown.png"]["id"]]
    assert len(a) == len(b)
    np.testing.assert_allclose([r["bbox"] for r in a], [r["bbox"] for r in b], atol=1e-3)


def test_the_threshold_keeps_exactly_the_detections_scoring_at_least_it(setup, first):
    out, _ = first
    images, results = _load(out)
    exif_ids = {im["id"] for im in images["images"] if "exif" in im["file_name"]}
    scores = sorted(r["score"] for r in results if r["image_id"] in exif_ids)
    threshold = scores[len(scores) // 2]
    high = setup["tmp"] / "high"
    # The same batch of two as before, so the same computation.
    _run(setup, high, [str(setup["tmp"] / "exif")], "--batch-size", "2", threshold=repr(threshold))
    _, kept = _load(high)
    assert kept and all(r["score"] >= threshold for r in kept)
    assert len(kept) == sum(s >= threshold for s in scores) < len(scores)


def test_nothing_drawn_above_threshold_1_and_class_n_without_the_json(setup):
    out = setup["tmp"] / "none"
    shown = setup["tmp"] / "exif" / "flower_shown.png"
    summary = _run(
        setup, out, [str(shown)], "dataloader.test.dataset.json_file=/no/such.json", threshold="1"
    )
    images, results = _load(out)
    assert summary["detections"] == 0 and results == []
    assert images["categories"] == [{"id": n, "name": f"class {n}"} for n in (1, 2, 3)]
    # No detection: the drawn image is the input, pixel for pixel.
    np.testing.assert_array_equal(
        np.asarray(Image.open(out / "flower_shown.png")), np.asarray(Image.open(shown))
    )


def test_nothing_is_written_outside_the_output_folder(setup, first):
    assert not (setup["tmp"] / "run").exists()  # train.output_dir untouched
    assert sorted(os.listdir(setup["photos"])) == setup["photos_listing"]
    assert sorted(os.listdir(setup["tmp"] / "exif")) == ["flower_rotated.png", "flower_shown.png"]
    assert set(os.listdir(setup["tmp"])) <= {
        "weights.pth",
        "categories.json",
        "exif",
        "out",
        "high",
        "none",
    }
    assert all(not p.name.startswith(".") for p in first[0].iterdir())  # no leftover temp files


def test_repeated_stems_get_their_own_output_files(setup, tmp_path):
    for sub in ("a", "b"):
        (tmp_path / sub).mkdir()
        shutil.copy(setup["tmp"] / "exif" / "flower_shown.png", tmp_path / sub / "x.png")
    out = tmp_path / "out"
    _run(setup, out, [str(tmp_path / "a"), str(tmp_path / "b")], threshold="1")
    images, _ = _load(out)
    assert [os.path.basename(im["output"]) for im in images["images"]] == ["x.png", "x_2.png"]
    assert (out / "x.png").is_file() and (out / "x_2.png").is_file()


@pytest.mark.parametrize(
    "change, message",
    [
        (("--input", "{tmp}/nope/*.jpg"), "--input '{tmp}/nope/*.jpg' matches no image"),
        (("--input", "{tmp}/missing.jpg"), "--input '{tmp}/missing.jpg' does not exist"),
        (("--input", "{tmp}/empty"), "--input '{tmp}/empty' is a folder without images"),
        (("--input", "{tmp}/bad.jpg"), "cannot read image '{tmp}/bad.jpg'"),
        (("--score-threshold", "1.5"), "--score-threshold must be within [0, 1], got 1.5"),
        (("--batch-size", "0"), "--batch-size must be at least 1, got 0"),
        (("--weights", "{tmp}/none.pth"), "--weights '{tmp}/none.pth' does not exist"),
        (("--weights", ""), "no weights to predict with"),
    ],
)
def test_mistakes_are_one_line_errors_naming_what(setup, tmp_path, change, message):
    (tmp_path / "empty").mkdir()
    (tmp_path / "bad.jpg").write_text("not an image")
    option, value = change[0], change[1].format(tmp=tmp_path)
    argv = {
        "--config": CONFIG,
        "--weights": setup["weights"],
        "--input": os.path.join(setup["photos"], "china.jpg"),
        "--output": str(tmp_path / "out"),
        "--score-threshold": "0.5",
        "--batch-size": "1",
        option: value,
    }
    args = [a for k, v in argv.items() for a in (k, v)] + [f"train.output_dir={tmp_path / 'run'}"]
    with loggers_restored(), pytest.raises(PgtrainError) as error:
        predict.main(args)
    text = str(error.value)
    assert message.format(tmp=tmp_path) in text and "\n" not in text
    assert not (tmp_path / "out").exists() and not (tmp_path / "run").exists()


def test_the_command_line_exits_non_zero_with_one_line(tmp_path):
    tool = os.path.join(ROOT, "tools", "predict.py")
    cmd = [sys.executable, tool, "--config", CONFIG, "--input", str(tmp_path / "x*.jpg")]
    cmd += ["--output", str(tmp_path / "out")]
    env = {**os.environ, "PYTHONPATH": ROOT, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"error: --input '{tmp_path / 'x*.jpg'}' matches no image "
        "(jpg/jpeg/png/bmp/tif/tiff/webp); check the pattern"
    ]
    assert not (tmp_path / "out").exists()
