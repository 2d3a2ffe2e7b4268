"""Drawing of the synthetic "shapes" images: textured backgrounds, occluding shaded shapes."""

import math

import numpy as np
from PIL import Image, ImageDraw

__all__ = ["SHAPE_NAMES", "CLASS_SETS", "draw_image"]

# Category id = position in SHAPE_NAMES + 1, the same in every class set's json.
SHAPE_NAMES = ("circle", "square", "triangle", "star", "hexagon", "cross", "ring")
# Disjoint sets for the fine-tuning study (base model on A, fine-tune on B). B has one class more,
# so a model fine-tuned on B needs new predictors (num_classes 4 -> 5), as in the Mask R-CNN
# fine-tuning recipe.
CLASS_SETS = {"A": ("circle", "square", "triangle"), "B": ("star", "hexagon", "cross", "ring")}

_MIN_RADIUS, _MAX_RADIUS = 0.08, 0.24  # of the image's short side
_MAX_INSTANCES = 6
_MIN_VISIBLE = 0.55  # an instance stays at least this visible when later ones cover it
_MIN_CONTRAST = 90.0  # RGB distance between a shape and what it is drawn over
_PLACEMENT_TRIES = 25
_MIN_AREA = 64  # pixels


def _regular_polygon(n: int, radius: float, angle: float) -> np.ndarray:
    theta = angle + 2 * math.pi * np.arange(n) / n
    return radius * np.stack([np.cos(theta), np.sin(theta)], axis=1)


def _outline(kind: str, radius: float, angle: float) -> np.ndarray | None:
    """Returns the polygon of a shape centred at the origin, or None for round shapes."""
    if kind == "square":
        return _regular_polygon(4, radius * 1.15, angle)
    if kind == "triangle":
        return _regular_polygon(3, radius * 1.3, angle)
    if kind == "hexagon":
        return _regular_polygon(6, radius * 1.05, angle)
    if kind == "star":
        outer = _regular_polygon(5, radius * 1.3, angle)
        inner = _regular_polygon(5, radius * 0.55, angle + math.pi / 5)
        return np.stack([outer, inner], axis=1).reshape(10, 2)
    if kind == "cross":
        a, b = radius * 1.1, radius * 0.36  # half length and half width of the arms
        corners = [(b, b), (b, a), (-b, a), (-b, b), (-a, b), (-a, -b)]
        corners += [(-b, -b), (-b, -a), (b, -a), (b, -b), (a, -b), (a, b)]
        c, s = math.cos(angle), math.sin(angle)
        return np.array(corners) @ np.array([[c, s], [-s, c]])
    return None


def _shape_mask(
    kind: str, centre: tuple[float, float], radius: float, angle: float, size: tuple[int, int]
) -> np.ndarray:
    """Returns the H×W boolean mask of one shape."""
    height, width = size
    canvas = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(canvas)
    cx, cy = centre
    outline = _outline(kind, radius, angle)
    if outline is not None:
        draw.polygon([(cx + x, cy + y) for x, y in outline], fill=1)
    else:
        draw.ellipse([cx - radius, cy - radius, cx + radius, cy + radius], fill=1)
        if kind == "ring":
            hole = radius * 0.5
            draw.ellipse([cx - hole, cy - hole, cx + hole, cy + hole], fill=0)
    return np.asarray(canvas, dtype=bool)


def _background(rng: np.random.Generator, size: tuple[int, int]) -> np.ndarray:
    """Returns an H×W×3 float background: a gradient, smooth colour noise or a soft texture."""
    height, width = size
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    first = rng.uniform(0, 255, 3).astype(np.float32)
    second = rng.uniform(0, 255, 3).astype(np.float32)
    kind = rng.integers(3)
    if kind == 0:  # linear gradient in a random direction
        theta = rng.uniform(0, 2 * math.pi)
        t = xs * math.cos(theta) + ys * math.sin(theta)
        t = (t - t.min()) / max(float(t.max() - t.min()), 1.0)
        return first + t[..., None] * (second - first)
    if kind == 1:  # smooth colour blobs: a small random grid, upsampled
        cells = rng.uniform(0, 255, (int(rng.integers(3, 7)), int(rng.integers(3, 7)), 3))
        small = Image.fromarray(cells.astype(np.uint8))
        return np.asarray(small.resize((width, height), Image.BILINEAR), dtype=np.float32)
    # stripes or checks of two nearby colours
    second = np.clip(first + rng.uniform(-50, 50, 3), 0, 255).astype(np.float32)
    period = rng.uniform(6, 20)
    theta = rng.uniform(0, math.pi)
    u = (xs * math.cos(theta) + ys * math.sin(theta)) / period
    v = (ys * math.cos(theta) - xs * math.sin(theta)) / period
    pattern = np.floor(u) % 2 if rng.random() < 0.5 else (np.floor(u) + np.floor(v)) % 2
    return first + pattern[..., None] * (second - first)


def _pick_colour(rng: np.random.Generator, below: list[np.ndarray]) -> np.ndarray:
    """Returns a colour far from every colour in `below` (or the best of a few tries)."""
    best, best_distance = None, -1.0
    for _ in range(20):
        colour = rng.uniform(0, 255, 3)
        distance = min(float(np.linalg.norm(colour - b)) for b in below)
        if distance >= _MIN_CONTRAST:
            return colour
        if distance > best_distance:
            best, best_distance = colour, distance
    return best


def _place(
    rng: np.random.Generator, kinds: tuple[str, ...], size: tuple[int, int], visible: list
) -> tuple[str, np.ndarray] | None:
    """Returns a new (kind, mask) that leaves every earlier instance visible enough, or None."""
    short = min(size)
    for _ in range(_PLACEMENT_TRIES):
        kind = kinds[int(rng.integers(len(kinds)))]
        radius = rng.uniform(_MIN_RADIUS, _MAX_RADIUS) * short
        margin = 0.6 * radius  # shapes may leave the frame a little, never mostly
        centre = (rng.uniform(margin, size[1] - margin), rng.uniform(margin, size[0] - margin))
        mask = _shape_mask(kind, centre, radius, rng.uniform(0, 2 * math.pi), size)
        if mask.sum() < _MIN_AREA:
            continue
        if all((vis & ~mask).sum() >= _MIN_VISIBLE * full for vis, full in visible):
            return kind, mask
    return None


def draw_image(
    rng: np.random.Generator, size: tuple[int, int], kinds: tuple[str, ...]
) -> tuple[np.ndarray, list[tuple[str, np.ndarray]]]:
    """Draws one image of 1..6 shapes of `kinds`, later shapes occluding earlier ones.

    Args:
        rng: the image's own generator (the image depends on nothing else).
        size: (height, width).
        kinds: the shape names to draw from.

    Returns:
        The H×W×3 uint8 image and, per shape in drawing order, its name and VISIBLE mask.
    """
    image = _background(rng, size)
    ys, xs = np.mgrid[0 : size[0], 0 : size[1]].astype(np.float32)
    names: list[str] = []
    visible: list[tuple[np.ndarray, int]] = []  # (visible mask, full area) per instance
    colours: list[np.ndarray] = []
    for _ in range(int(rng.integers(1, _MAX_INSTANCES + 1))):
        placed = _place(rng, kinds, size, visible)
        if placed is None:
            continue
        kind, mask = placed
        under = image[mask]
        below = [under.mean(axis=0), np.median(under, axis=0)]
        # Also stand out from every shape this one touches, not just from the average below.
        below += [c for c, (vis, _) in zip(colours, visible, strict=True) if (vis & mask).any()]
        colour = _pick_colour(rng, below)
        # A soft shading across the shape, so colour alone is not a flat template.
        theta, amplitude = rng.uniform(0, 2 * math.pi), rng.uniform(0, 0.25)
        ramp = (xs * math.cos(theta) + ys * math.sin(theta))[mask]
        ramp = (ramp - ramp.mean()) / max(float(np.ptp(ramp)), 1.0)
        image[mask] = colour * (1 + amplitude * ramp[:, None])
        visible = [(vis & ~mask, full) for vis, full in visible] + [(mask, int(mask.sum()))]
        names.append(kind)
        colours.append(colour)
    noise = rng.standard_normal(image.shape, dtype=np.float32) * rng.uniform(1, 6)
    image = np.clip(image + noise, 0, 255).astype(np.uint8)
    return image, [(kind, vis) for kind, (vis, _) in zip(names, visible, strict=True)]
