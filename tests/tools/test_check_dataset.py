"""tools/check_dataset.py: the summary, every refused item, --visualize, and its exit status."""

import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from tests.data.coco_corpus import ann, exif_photo, image, write

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "tools"))
import check_dataset  # noqa: E402

from tests._loggers import loggers_restored  # noqa: E402


@pytest.fixture(autouse=True)
def _restored_loggers():
    """The tool's main sets up pgtrain's logger; later tests expect it as it was."""
    with loggers_restored():
        yield


def _messy(tmp_path):
    """Two categories, an empty image, a phone photo, a repaired and a left-out annotation."""
    categories = [{"id": 3, "name": "cat"}, {"id": 8, "name": "dog"}]
    images = [image(1), image(2), image(3, 96, 128, name="phone.jpg")]
    anns = [
        ann(1, 1, [50, 5, 10.5, 10], category_id=3),  # past the border: clipped
        ann(2, 1, [5, 5, 10, 10], category_id=8, iscrowd=None, area=None),
        ann(3, 3, [20, 10, 40, 30], category_id=8),
        ann(4, 3, [0, 0, 9, 9], category_id=8, iscrowd=1),
    ]
    return write(tmp_path, images, anns, categories, pixels={"phone.jpg": exif_photo(6)})


def test_summary_of_a_dataset_that_loads(tmp_path, capsys):
    json_file, root = _messy(tmp_path)
    assert check_dataset.main(["--json", json_file, "--image-root", root]) == 0
    out = capsys.readouterr().out
    assert (
        f"[json] {json_file}: 3 images (1 without annotations), 4 annotations, 2 categories" in out
    )
    assert "\n       3  cat            1       0\n" in out  # id, name, annotations, crowd
    assert "\n       8  dog            3       1\n" in out
    assert (
        "repaired 1 annotations without 'iscrowd' (set to 0), 1 without 'area' (the area of "
        "their segmentation), 1 boxes past the image border (clipped), 1 images stored turned "
        "or mirrored (read in their EXIF orientation); left out of the training targets: "
        "1 crowd regions" in out
    )
    assert "refused: 0" in out


def test_every_refused_item_is_listed_and_the_status_is_1(tmp_path, capsys):
    anns = [ann(i, 1, [1, 1, 5, 5], category_id=9) for i in range(1, 26)]
    json_file, root = write(tmp_path, [image(1), image(2)], anns)
    os.remove(os.path.join(root, "2.png"))
    assert check_dataset.main(["--json", json_file, "--image-root", root]) == 1
    out = capsys.readouterr().out
    assert "refused: 26 (25 unknown category, 1 missing image file)" in out
    assert "  image id 1, annotation id 7: has category_id 9, which is not in 'categories'" in out
    assert "  ... and 6 more" in out  # 20 listed by default
    assert check_dataset.main(["--json", json_file, "--image-root", root, "--max-problems", "30"])
    assert "image id 2, '2.png': is not under image_root" in capsys.readouterr().out


def test_decode_finds_a_truncated_image(tmp_path, capsys):
    json_file, root = write(tmp_path, [image(1, name="1.jpg")], [ann(1, 1, [1, 1, 5, 5])])
    pixels = np.random.default_rng(0).integers(0, 255, (40, 60, 3), dtype=np.uint8)
    path = os.path.join(root, "1.jpg")
    Image.fromarray(pixels).save(path)
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) // 2)
    assert check_dataset.main(["--json", json_file, "--image-root", root]) == 0  # header fine
    assert check_dataset.main(["--json", json_file, "--image-root", root, "--decode"]) == 1
    assert "'1.jpg': cannot be read as an image (image file is truncated" in (
        capsys.readouterr().out
    )


def test_visualize_draws_the_annotations_of_n_images(tmp_path, capsys):
    json_file, root = _messy(tmp_path)
    out_dir = tmp_path / "vis"
    argv = ["--json", json_file, "--image-root", root, "--visualize", "2"]
    assert check_dataset.main([*argv, "--output-dir", str(out_dir)]) == 0
    assert sorted(os.listdir(out_dir / "json")) == ["1_1.png", "2_2.png"]
    drawn = np.asarray(Image.open(out_dir / "json" / "1_1.png"))
    plain = np.asarray(Image.open(os.path.join(root, "1.png")))
    assert drawn.shape == plain.shape and (drawn != plain).any(axis=2).sum() > 50
    assert "2 images drawn under" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([], "give either --json"),
        (["--json", "a.json", "--config", "b.py"], "give either --json"),
        (["--json", "a.json", "--visualize", "2"], "--visualize needs --output-dir"),
        (["--json", "a.json", "--visualize", "-1"], "take a number >= 0"),
        (["--json", "a.json", "x=1"], "need --config"),
    ],
)
def test_usage_errors_exit_2(argv, message, capsys):
    with pytest.raises(SystemExit) as info:
        check_dataset.main(argv)
    assert info.value.code == 2 and message in capsys.readouterr().err


def test_the_command_line_on_a_config(tmp_path):
    """As typed: the main config's datasets (the built-in shapes), and a missing json."""
    tool = os.path.join(ROOT, "tools", "check_dataset.py")
    env = {**os.environ, "PGTRAIN_DATA": str(tmp_path / "data")}
    overrides = ["shapes.num_train=4", "shapes.num_val=2", "shapes.image_size=64"]
    # Settings a training run would refuse together do not concern the datasets' check.
    overrides += ["train.ema.enabled=true", "train.strategy=fsdp"]
    cmd = [sys.executable, tool, "--config", "projects/maskrcnn/config.py", *overrides]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "[train] " in proc.stdout and "[test] " in proc.stdout and "refused: 0" in proc.stdout
    cmd = [sys.executable, tool, "--json", str(tmp_path / "nope.json")]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"error: --json '{tmp_path / 'nope.json'}' does not exist; pass a COCO instances json"
    ]
