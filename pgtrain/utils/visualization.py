"""Drawing instance predictions (masks, boxes, labels) over images, and grids of them as PNG."""

import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from iopath.common.file_io import g_pathmgr
from PIL import Image, ImageDraw, ImageFont

__all__ = [
    "draw_instances",
    "prediction_to_cpu",
    "save_prediction_grid",
    "scaled_font_size",
    "scaled_line_width",
]

# Distinct, saturated colours (RGB); label i gets _PALETTE[i % len(_PALETTE)].
_PALETTE = (
    (230, 25, 75),
    (60, 180, 75),
    (255, 225, 25),
    (0, 130, 200),
    (245, 130, 48),
    (145, 30, 180),
    (70, 240, 240),
    (240, 50, 230),
    (210, 245, 60),
    (250, 190, 212),
    (0, 128, 128),
    (220, 190, 255),
    (170, 110, 40),
    (128, 0, 0),
    (170, 255, 195),
    (128, 128, 0),
)
_GRID_GAP = 2  # pixels between tiles of a grid


def prediction_to_cpu(prediction: Mapping[str, Any]) -> dict[str, Any]:
    """A model's output for one image with its tensors detached on the CPU, ready to draw."""
    return {
        k: v.detach().cpu() if isinstance(v, torch.Tensor) else v for k, v in prediction.items()
    }


def draw_instances(
    image: np.ndarray | torch.Tensor,
    prediction: Mapping[str, Any],
    *,
    class_names: Sequence[str],
    score_threshold: float = 0.5,
    alpha: float = 0.5,
    mask_threshold: float = 0.5,
    line_width: int = 1,
    font_size: float | None = None,
) -> np.ndarray:
    """Draws translucent masks, box outlines and "name score" labels of instances over an image.

    Args:
        image: H x W x 3 uint8 array, or a C x H x W tensor (uint8, or float in [0, 1]).
        prediction: ``boxes`` (N x 4, XYXY pixels of `image`), ``labels`` (1..K), optionally
            ``scores`` (missing for ground truth: drawn with names only) and ``masks``
            (N x 1 x H x W or N x H x W probabilities or binary masks).
        class_names: name of label i + 1 at index i; other labels are written as numbers.
        score_threshold: instances scoring below it are not drawn.
        alpha: opacity of the masks.
        mask_threshold: mask value above which a pixel is drawn.
        line_width: width of the box outlines, in pixels.
        font_size: height of the label font in pixels (a scalable font); None: PIL's small
            default bitmap font. `scaled_line_width` and `scaled_font_size` fit them to a photo.

    Returns:
        A new H x W x 3 uint8 array.

    Raises:
        ValueError: the image has another layout, or the masks another size than the image.
    """
    canvas = _to_hwc_uint8(image)
    boxes, labels, scores, masks = _instances(prediction, canvas.shape[:2], score_threshold)
    ground_truth = prediction.get("scores") is None  # annotations: names without a score
    order = np.argsort(scores, kind="stable")  # highest score drawn last, on top
    if masks is not None:
        blended = canvas.astype(np.float32)
        for i in order:
            region = masks[i] > mask_threshold
            color = np.array(_color(labels[i]), dtype=np.float32)
            blended[region] = (1 - alpha) * blended[region] + alpha * color
        canvas = blended.round().clip(0, 255).astype(np.uint8)
    pil = Image.fromarray(canvas)
    draw = ImageDraw.Draw(pil)
    font = ImageFont.load_default() if font_size is None else ImageFont.load_default(font_size)
    for i in order:
        color = _color(labels[i])
        x0, y0, x1, y1 = (float(v) for v in boxes[i])
        draw.rectangle((x0, y0, x1, y1), outline=color, width=line_width)
        label = int(labels[i])
        name = class_names[label - 1] if 0 < label <= len(class_names) else str(label)
        text = name if ground_truth else f"{name} {scores[i]:.2f}"
        left, top, right, bottom = draw.textbbox((x0, y0), text, font=font)
        draw.rectangle((left, top, right, bottom), fill=color)
        draw.text((x0, y0), text, fill=(0, 0, 0), font=font)
    return np.asarray(pil).copy()


def scaled_line_width(height: int, width: int) -> int:
    """A box outline width that stays visible on an image of this size: 1 pixel up to 500
    pixels on the long side, one more per 500."""
    return max(1, round(max(height, width) / 500))


def scaled_font_size(height: int, width: int) -> float:
    """A label font height readable on an image of this size: 2.5% of the long side, at least
    11 pixels."""
    return max(11.0, 0.025 * max(height, width))


def save_prediction_grid(
    images: Sequence[np.ndarray | torch.Tensor],
    predictions: Sequence[Mapping[str, Any]],
    path: str,
    *,
    class_names: Sequence[str],
    ncols: int = 4,
    score_threshold: float = 0.5,
    alpha: float = 0.5,
) -> np.ndarray:
    """Draws each image's predictions (see `draw_instances`) and writes them as one PNG grid.

    Tiles of different sizes are placed top-left in cells as large as the largest image.

    Args:
        images: the images the predictions were made on.
        predictions: one prediction dict per image.
        path: the PNG file to write (any iopath path); its folder is created.
        class_names: name of label i + 1 at index i.
        ncols: images per row.
        score_threshold: instances scoring below it are not drawn.
        alpha: opacity of the masks.

    Returns:
        The grid as an H x W x 3 uint8 array.
    """
    if len(images) != len(predictions) or not images:
        raise ValueError(
            f"save_prediction_grid needs one prediction per image and at least one image; got "
            f"{len(images)} images and {len(predictions)} predictions"
        )
    if ncols < 1:
        raise ValueError(f"save_prediction_grid: ncols must be at least 1, got {ncols}")
    tiles = [
        draw_instances(im, p, class_names=class_names, score_threshold=score_threshold, alpha=alpha)
        for im, p in zip(images, predictions, strict=True)
    ]
    grid = _tile(tiles, min(ncols, len(tiles)))
    folder = os.path.dirname(path)
    if folder:
        g_pathmgr.mkdirs(folder)
    with g_pathmgr.open(path, "wb") as f:
        Image.fromarray(grid).save(f, format="PNG")
    return grid


def _tile(tiles: list[np.ndarray], ncols: int) -> np.ndarray:
    cell_h = max(t.shape[0] for t in tiles)
    cell_w = max(t.shape[1] for t in tiles)
    nrows = (len(tiles) + ncols - 1) // ncols
    grid = np.zeros(
        (nrows * cell_h + (nrows - 1) * _GRID_GAP, ncols * cell_w + (ncols - 1) * _GRID_GAP, 3),
        dtype=np.uint8,
    )
    for i, tile in enumerate(tiles):
        top = (i // ncols) * (cell_h + _GRID_GAP)
        left = (i % ncols) * (cell_w + _GRID_GAP)
        grid[top : top + tile.shape[0], left : left + tile.shape[1]] = tile
    return grid


def _to_hwc_uint8(image: np.ndarray | torch.Tensor) -> np.ndarray:
    if isinstance(image, torch.Tensor):
        if image.dim() != 3 or image.shape[0] not in (1, 3):
            raise ValueError(f"expected a C x H x W image tensor, got shape {tuple(image.shape)}")
        tensor = image.detach().cpu()
        if tensor.is_floating_point():
            tensor = (tensor * 255).round().clamp(0, 255)
        array = tensor.to(torch.uint8).permute(1, 2, 0).numpy()
    else:
        array = np.asarray(image)
        if array.ndim != 3 or array.shape[2] not in (1, 3) or array.dtype != np.uint8:
            raise ValueError(
                f"expected an H x W x 3 uint8 image array, got shape {array.shape} {array.dtype}"
            )
    if array.shape[2] == 1:
        array = np.repeat(array, 3, axis=2)
    return np.ascontiguousarray(array).copy()


def _instances(
    prediction: Mapping[str, Any], size: tuple[int, int], score_threshold: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
    boxes = _numpy(prediction["boxes"]).reshape(-1, 4)
    labels = _numpy(prediction["labels"]).reshape(-1)
    scores = prediction.get("scores")
    scores = np.ones(len(boxes)) if scores is None else _numpy(scores).reshape(-1)
    keep = scores >= score_threshold
    masks = prediction.get("masks")
    if masks is not None:
        masks = _numpy(masks).astype(np.float32)
        masks = masks.reshape(len(masks), *masks.shape[-2:])
        if masks.shape[-2:] != tuple(size):
            raise ValueError(
                f"masks are {masks.shape[-2]} x {masks.shape[-1]} but the image is "
                f"{size[0]} x {size[1]}; draw on the image the model was given"
            )
        masks = masks[keep]
    return boxes[keep], labels[keep], scores[keep], masks


def _numpy(value: Any) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy()
    return np.asarray(value)


def _color(label: int) -> tuple[int, int, int]:
    return _PALETTE[int(label) % len(_PALETTE)]
