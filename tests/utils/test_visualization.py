import numpy as np
import pytest
import torch
from PIL import Image

from pgtrain.utils.visualization import draw_instances, save_prediction_grid

NAMES = ["circle", "square"]


def _prediction(score=0.9, size=(48, 64)):
    masks = torch.zeros(1, 1, *size)
    masks[0, 0, 20:40, 30:60] = 0.8
    return {
        "boxes": torch.tensor([[30.0, 20.0, 60.0, 40.0]]),
        "labels": torch.tensor([2]),
        "scores": torch.tensor([score]),
        "masks": masks,
    }


def test_draw_instances_colours_the_mask_and_leaves_the_rest():
    image = np.full((48, 64, 3), 100, dtype=np.uint8)
    drawn = draw_instances(image, _prediction(), class_names=NAMES)
    assert drawn.shape == (48, 64, 3) and drawn.dtype == np.uint8
    # Inside the mask (below the label text): half the grey, half the label's colour.
    assert drawn[36, 45].tolist() != [100, 100, 100]
    assert np.abs(drawn[36, 45].astype(int) - drawn[37, 46]).max() == 0
    assert np.array_equal(drawn[5:15, 0:20], image[5:15, 0:20])  # far from mask, box and text
    assert np.array_equal(image, np.full((48, 64, 3), 100, dtype=np.uint8))  # input untouched


def test_draw_instances_skips_low_scores_and_accepts_chw_float_tensors():
    image = torch.full((3, 48, 64), 0.5)
    drawn = draw_instances(image, _prediction(score=0.2), class_names=NAMES)
    assert drawn.shape == (48, 64, 3)
    assert (drawn == 128).all()  # nothing drawn over the 0.5 grey


def test_draw_instances_rejects_masks_of_another_size():
    image = np.zeros((32, 32, 3), dtype=np.uint8)
    with pytest.raises(ValueError, match="draw on the image the model was given"):
        draw_instances(image, _prediction(), class_names=NAMES)


def test_save_prediction_grid_writes_one_png_of_all_images(tmp_path):
    images = [torch.zeros(3, 48, 64, dtype=torch.uint8) for _ in range(5)]
    predictions = [_prediction() for _ in range(5)]
    path = tmp_path / "vis" / "val_predictions.png"
    grid = save_prediction_grid(images, predictions, str(path), class_names=NAMES, ncols=3)
    assert path.stat().st_size > 0
    with Image.open(path) as png:
        assert png.size == (3 * 64 + 2 * 2, 2 * 48 + 2)  # 3 columns, 2 rows, 2-pixel gaps
        assert np.array_equal(np.asarray(png.convert("RGB")), grid)
    second_row = 48 + 2
    assert grid[36, 45].any() and grid[second_row + 36, (64 + 2) + 45].any()  # masks drawn
    assert not grid[second_row:, 2 * (64 + 2) :].any()  # the sixth cell stays empty


def test_draw_instances_draws_ground_truth_without_scores():
    image = np.zeros((48, 64, 3), dtype=np.uint8)
    target = {k: v for k, v in _prediction().items() if k != "scores"}
    target["masks"] = (target["masks"][:, 0] > 0).to(torch.uint8)  # N x H x W binary, as loaded
    drawn = draw_instances(image, target, class_names=NAMES)
    assert drawn[36, 45].any() and not drawn[5:15, 0:20].any()
