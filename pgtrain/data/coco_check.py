"""The whole check of a COCO instances json and its image files, done before training.

`check_coco` reads the json once and sorts everything it finds into three kinds:

- **refused**: problems no loader can repair without guessing (duplicate ids, unknown categories,
  malformed boxes or segmentations, RLE sizes that disagree with the image, missing or unreadable
  image files, image sizes that disagree with the json after EXIF orientation). Each names the
  json, the image and annotation ids and the field; `CocoCheck.raise_if_refused` turns them into a
  one-line error.
- **repaired**, the way Detectron2's loader repairs them: a missing ``iscrowd`` is 0, a missing
  ``area`` is the area of the segmentation, a box past the image border is clipped to it, an image
  with an EXIF orientation is read as shown. Counted for one summary line.
- **left out of training targets**: crowd regions and boxes with no area inside their image
  (torchvision's losses cannot ignore them; evaluation still reads them from the json).

Image files are checked by their header only (no pixels are decoded), about 50 µs an image
from the page cache: COCO train2017's 118k images add about 6 s to the 14 s of the json's check
(``benchmarks/coco_dataset_build.py``).
"""

import contextlib
import io
import json
import math
import os
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from PIL import Image
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from pgtrain.errors import DatasetError, DatasetNotFoundError, first_line
from pgtrain.utils.checks import is_real
from pgtrain.utils.suggest import listing

__all__ = ["CocoCheck", "Problem", "check_coco"]

_REQUIRED_TOP = ("images", "annotations", "categories")
_REQUIRED_FIELDS = {
    "images": ("id", "file_name", "width", "height"),
    "annotations": ("id", "image_id", "bbox", "category_id", "segmentation"),
    "categories": ("id", "name"),
}
_EXIF_ORIENTATION = 0x0112
_SWAPS_SIDES = {5, 6, 7, 8}  # EXIF orientations that show the image turned by 90 degrees
_STORE_ORIENTATIONS = {2, 3, 4, 5, 6, 7, 8}  # 1 is upright; other values are invalid
# Pillow modes whose values do not fit 8 bits: reading them as RGB would clip, not scale
_DEEP_MODES = {"I;16": "16-bit", "I;16B": "16-bit", "I;16L": "16-bit", "I;16N": "16-bit",
               "I": "32-bit integer", "F": "32-bit float"}  # fmt: skip
_MISSING_FILE = "missing image file"
_KEY_TYPES = (int, str, float)
_NUMBER_TYPES = frozenset((int, float))  # exact types: a bool is no number here
_FIX_ANNOTATION = "fix or remove the annotation"


@dataclass(frozen=True)
class Problem:
    """One refused item: its kind (for counting), where it is, what is wrong, what to do."""

    kind: str
    where: str
    text: str
    advice: str

    def line(self) -> str:
        return f"{self.where}: {self.text}"


@dataclass
class CocoCheck:
    """What `check_coco` found in one json (and its images, when an image root was given).

    Attributes:
        json_file: the json checked.
        image_root: the image folder checked, or None when only the json was.
        data: the json's content, repaired in place (``iscrowd`` and ``area`` filled).
        refused: the problems, in the order of the json.
        repaired: number of items per kind of repair.
        left_out: number of annotations per reason they are not training targets.
        rotated: image id -> EXIF orientation, for the images stored turned or mirrored.
    """

    json_file: str
    image_root: str | None
    data: dict[str, Any]
    refused: list[Problem] = field(default_factory=list)
    repaired: Counter[str] = field(default_factory=Counter)
    left_out: Counter[str] = field(default_factory=Counter)
    rotated: dict[Any, int] = field(default_factory=dict)

    def coco(self) -> COCO:
        """The json as a pycocotools index (call after `raise_if_refused`)."""
        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
            coco = COCO()
            coco.dataset = self.data
            coco.createIndex()
        return coco

    def raise_if_refused(self) -> None:
        """Raises a one-line error naming the first problem (and how many there are).

        Raises:
            DatasetNotFoundError: the first problem is a missing image file.
            DatasetError: any other problem.
        """
        if not self.refused:
            return
        first = self.refused[0]
        root = f" --image-root {self.image_root}" if self.image_root else ""
        command = f"python tools/check_dataset.py --json {self.json_file}{root}"
        if first.kind == _MISSING_FILE:
            missing = sum(p.kind == _MISSING_FILE for p in self.refused)
            others = len(self.refused) - missing
            raise DatasetNotFoundError(
                f"{self.json_file}: {missing:,} of {len(self.data['images']):,} image files "
                f"are not under image_root '{self.image_root}' (first: {first.where}); check "
                "image_root, or remove those images from the json"
                + (f" ({others:,} other problems; list them with: {command})" if others else "")
            )
        more = ""
        if len(self.refused) > 1:
            more = f" ({len(self.refused):,} problems in all; list them with: {command})"
        raise DatasetError(f"{self.json_file}: {first.line()}; {first.advice}{more}")

    def repairs_line(self) -> str | None:
        """One line of what was repaired and left out, or None when nothing was."""
        parts = [f"{n:,} {kind}" for kind, n in self.repaired.items() if n]
        out = [f"{n:,} {kind}" for kind, n in self.left_out.items() if n]
        if not parts and not out:
            return None
        text = f"{self.json_file}: "
        text += f"repaired {', '.join(parts)}" if parts else "nothing to repair"
        if out:
            text += f"; left out of the training targets: {', '.join(out)}"
        return text

    def summary(self, max_problems: int = 20) -> str:
        """The report of `tools/check_dataset.py`: counts, categories, repairs, problems."""
        images, anns = self.data.get("images", []), self.data.get("annotations", [])
        with_anns = {a.get("image_id") for a in anns if isinstance(a, dict)}
        empty = sum(1 for im in images if isinstance(im, dict) and im.get("id") not in with_anns)
        lines = [
            f"{self.json_file}: {len(images):,} images ({empty:,} without annotations), "
            f"{len(anns):,} annotations, {len(self.data.get('categories', [])):,} categories",
            "annotations per category:",
            *_category_table(self.data),
            "image files: "
            + ("not checked (no image root)" if self.image_root is None else self.image_root),
            self.repairs_line() or "repaired: nothing",
            f"refused: {len(self.refused):,}{_kinds(self.refused)}",
        ]
        lines += [f"  {p.line()}" for p in self.refused[:max_problems]]
        if len(self.refused) > max_problems:
            lines.append(f"  ... and {len(self.refused) - max_problems:,} more")
        return "\n".join(lines)


def check_coco(json_file: str, image_root: str | None = None, *, decode: bool = False) -> CocoCheck:
    """Checks a COCO instances json whole (and its image files when `image_root` is given).

    Image files are checked by their header (present, an image, its size after the EXIF
    orientation); ``decode=True`` also decodes every image's pixels, which finds truncated files
    too but takes milliseconds an image (`tools/check_dataset.py --decode`).

    Only a file that is not a COCO json at all (unreadable, no ``images`` / ``annotations`` /
    ``categories`` lists) raises here; every other problem is collected in the result.

    Raises:
        DatasetError: the file is not valid json or lacks the three lists.
    """
    data = _load_json(json_file)
    check = CocoCheck(json_file, image_root, data)
    if _box_only(check):
        return check
    images = _whole_ids(check, _valid_entries(check, "images"), "image")
    categories = _whole_ids(check, _valid_entries(check, "categories"), "category")
    anns = _whole_ids(check, _valid_entries(check, "annotations"), "annotation")
    listed = {_hashable(im.get("id")) for im in data["images"] if isinstance(im, dict)}
    image_of = _unique(check, images, "image")
    category_ids = _unique(check, categories, "category")
    _unique(check, anns, "annotation")
    _unique_names(check, categories)
    _unique_files(check, list(image_of.values()))
    for im in images:
        _check_image_entry(check, im)
    sizes = {_hashable(im["id"]): (im["height"], im["width"]) for im in images if _has_size(im)}
    valid = [a for a in anns if _check_annotation(check, a, sizes, category_ids, listed)]
    if image_root is not None:
        for im in image_of.values():
            _check_image_file(check, im, image_root, decode)
    _repair(check, valid, sizes)
    return check


def _box_only(check: CocoCheck) -> bool:
    """Refuses, in one line, a file none of whose annotations has a segmentation (a detection
    export: CVAT rectangles, Roboflow or Label Studio boxes), rather than each annotation."""
    anns = check.data["annotations"]
    if not anns or any(isinstance(a, dict) and a.get("segmentation") for a in anns):
        return False
    _refuse(check, "no segmentations", "annotations",
            f"none of the {len(anns):,} annotations has a segmentation (a box-only export)",
            "Mask R-CNN learns masks: export the dataset with polygons or masks")  # fmt: skip
    return True


def _load_json(json_file: str) -> dict[str, Any]:
    try:
        with open(json_file) as f:
            data = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DatasetError(f"json_file '{json_file}' is not valid json: {exc}") from exc
    if not isinstance(data, dict):
        raise DatasetError(f"json_file '{json_file}' must hold a json object (COCO instances)")
    for key in _REQUIRED_TOP:
        if not isinstance(data.get(key), list):
            raise DatasetError(
                f"{json_file} has no '{key}' list; a COCO instances json needs "
                f"{', '.join(_REQUIRED_TOP)}"
            )
    return data


def _refuse(check: CocoCheck, kind: str, where: str, text: str, advice: str) -> None:
    check.refused.append(Problem(kind, where, text, advice))


def _valid_entries(check: CocoCheck, key: str) -> list[dict[str, Any]]:
    """The entries of `key` that are objects with every required field; refuses the others."""
    name, fields = key[:-1], _REQUIRED_FIELDS[key]
    valid = []
    for i, entry in enumerate(check.data[key]):
        if not isinstance(entry, dict):
            _refuse(
                check,
                "not an object",
                f"{key}[{i}]",
                "is not a json object",
                f"every {name} is an object with {', '.join(fields)}",
            )
            continue
        missing = [f for f in fields if f not in entry]
        if missing:
            where = f"{name} id {entry['id']}" if "id" in entry else f"{key}[{i}]"
            if key == "annotations" and "image_id" in entry:
                where = f"image id {entry['image_id']}, {where}"
            _refuse(
                check,
                "missing field",
                where,
                f"has no {', '.join(map(repr, missing))}",
                f"every {name} needs {', '.join(fields)}",
            )
            continue
        valid.append(entry)
    return valid


def _whole_ids(check: CocoCheck, entries: list[dict[str, Any]], name: str) -> list[dict]:
    """Refuses ids that are not whole numbers (the evaluator and pycocotools' results index
    images and categories by integer id); returns the entries whose ids are."""
    kept = []
    for entry in entries:
        ident = entry["id"]
        if _is_whole_number(ident):
            kept.append(entry)
            continue
        _refuse(
            check,
            f"malformed {name} id",
            f"{name} id {ident!r}",
            f"is a {type(ident).__name__}, not a whole number",
            f"COCO ids are integers: renumber the {name}s (and what refers to them)",
        )
    return kept


def _is_whole_number(value: Any) -> bool:
    return (type(value) is int) or (type(value) is float and value.is_integer())


def _unique(check: CocoCheck, entries: list[dict[str, Any]], name: str) -> dict[Any, Any]:
    """Refuses repeated ids (merged exports); returns id -> entry of the ids seen once."""
    counts = Counter(map(_hashable, (e["id"] for e in entries)))
    for ident, n in counts.items():
        if n > 1:
            _refuse(
                check,
                f"duplicate {name} id",
                f"{name} id {ident}",
                f"occurs {n} times (merged exports?)",
                f"give every {name} a unique id",
            )
    return {_hashable(e["id"]): e for e in entries if counts[_hashable(e["id"])] == 1}


def _hashable(value: Any) -> Any:
    """The id as a dict key (an id written as a list or object would not hash)."""
    return value if type(value) in _KEY_TYPES else repr(value)


def _unique_names(check: CocoCheck, categories: list[dict[str, Any]]) -> None:
    counts = Counter(str(c["name"]) for c in categories)
    for name, n in counts.items():
        if n > 1:
            _refuse(
                check,
                "duplicate category name",
                f"category name {name!r}",
                f"is used by {n} categories",
                "give every category a unique name (labels are matched by name)",
            )


def _unique_files(check: CocoCheck, images: list[dict[str, Any]]) -> None:
    """Refuses one file listed under several image ids: a merged export that split an image's
    objects between two entries trains each with the other's objects as background."""
    ids: dict[str, list[Any]] = {}
    for im in images:
        if isinstance(im["file_name"], str):
            ids.setdefault(os.path.normpath(im["file_name"]), []).append(im["id"])
    for name, same in ids.items():
        if len(same) > 1:
            _refuse(check, "duplicate file_name", f"file '{name}'",
                    f"is listed under image ids {', '.join(map(str, same))} (merged exports?)",
                    "keep one image entry with all of its annotations")  # fmt: skip


def _has_size(im: dict[str, Any]) -> bool:
    return all(
        _is_whole_number(im[key]) and not isinstance(im[key], bool) and im[key] >= 1
        for key in ("height", "width")
    )


def _check_image_entry(check: CocoCheck, im: dict[str, Any]) -> None:
    where = f"image id {im['id']}"
    if not _has_size(im):
        _refuse(
            check,
            "malformed size",
            where,
            f"has height {im['height']!r} and width {im['width']!r}",
            "height and width are positive whole numbers of pixels",
        )
    elif type(im["height"]) is float or type(im["width"]) is float:  # 640.0: as ints
        im["height"], im["width"] = int(im["height"]), int(im["width"])
        check.repaired["image sizes written as floats (read as integers)"] += 1
    if not isinstance(im["file_name"], str) or not im["file_name"]:
        _refuse(
            check,
            "malformed file_name",
            where,
            f"has file_name {im['file_name']!r}",
            "file_name is the image's path relative to image_root",
        )


def _check_annotation(
    check: CocoCheck,
    ann: dict[str, Any],
    sizes: dict[Any, tuple[int, int]],
    category_ids: Any,
    listed: set[Any],
) -> bool:
    """Refuses what is wrong with one annotation; True when nothing is. `sizes` holds the
    images that passed their own checks, `listed` the ids of every image entry."""
    image_id = _hashable(ann["image_id"])
    if image_id not in sizes:
        if image_id not in listed:
            _refuse(check, "unknown image_id", f"annotation id {ann['id']}",
                    f"refers to image_id {ann['image_id']!r}, which is not in 'images'",
                    _FIX_ANNOTATION)  # fmt: skip
        return False  # or its image is refused already
    found = []
    if _hashable(ann["category_id"]) not in category_ids:
        ids = _preview(sorted(category_ids, key=str))
        found.append(("unknown category", f"has category_id {ann['category_id']!r}, which is "
                      f"not in 'categories' (ids {ids})"))  # fmt: skip
    problem = _bbox_problem(ann["bbox"])
    if problem:
        found.append(("malformed bbox", f"field 'bbox' {problem}"))
    problem = _segmentation_problem(ann["segmentation"], sizes[image_id])
    if problem:
        found.append(("malformed segmentation", f"field 'segmentation' {problem}"))
    if ann.get("iscrowd", 0) not in (0, 1):
        found.append(("malformed iscrowd", f"field 'iscrowd' is {ann['iscrowd']!r}, not 0 or 1"))
    if "area" in ann and not (_is_number(ann["area"]) and ann["area"] >= 0):
        found.append(("malformed area", f"field 'area' is {ann['area']!r}, not a number >= 0"))
    for kind, text in found:  # the place is written only for what is refused
        where = f"image id {ann['image_id']}, annotation id {ann['id']}"
        _refuse(check, kind, where, text, _FIX_ANNOTATION)
    return not found


def _preview(values: list[Any], limit: int = 10) -> str:
    return listing(values, limit)


def _is_number(value: Any) -> bool:
    return is_real(value) and math.isfinite(value)


def _finite_numbers(values: list[Any]) -> bool:
    """Whether every value is a finite int or float (not a bool); fast for long polygons."""
    return set(map(type, values)) <= _NUMBER_TYPES and math.isfinite(sum(values))


def _bbox_problem(bbox: Any) -> str | None:
    if not isinstance(bbox, list) or len(bbox) != 4 or not _finite_numbers(bbox):
        return f"is {bbox!r}; expected [x, y, width, height] (4 finite numbers)"
    if bbox[2] < 0 or bbox[3] < 0:
        return f"is {bbox!r}: a negative width or height (is it [x0, y0, x1, y1]?)"
    return None


def _segmentation_problem(segm: Any, size: tuple[int, int]) -> str | None:
    if isinstance(segm, list):
        if not segm:
            return "is an empty polygon list"
        for i, polygon in enumerate(segm):
            if not (isinstance(polygon, list) and _finite_numbers(polygon)):
                return f"has polygon {i}, which is not a list of numbers [x0, y0, x1, y1, ...]"
        if not any(_is_polygon(p) for p in segm):
            return "has no polygon of 3+ points ([x0, y0, x1, y1, x2, y2, ...])"
        return None  # slivers beside a real polygon are dropped (a repair), as Detectron2 does
    if isinstance(segm, dict) and "counts" in segm and "size" in segm:
        return _rle_problem(segm, size)
    return "is neither a list of polygons nor an RLE dict with 'counts' and 'size'"


def _is_polygon(polygon: list[float]) -> bool:
    return len(polygon) >= 6 and len(polygon) % 2 == 0


def _rle_problem(segm: dict[str, Any], size: tuple[int, int]) -> str | None:
    rle_size, counts = segm["size"], segm["counts"]
    if not (isinstance(rle_size, list) and len(rle_size) == 2 and _finite_numbers(rle_size)):
        return f"has RLE size {rle_size!r}; expected [height, width]"
    if list(rle_size) != list(size):
        return f"has RLE size {list(rle_size)} but the image is {list(size)} (HxW)"
    height, width = size
    if isinstance(counts, list):  # uncompressed: run lengths that cover the image exactly
        if not all(type(c) is int and c >= 0 for c in counts) or sum(counts) != height * width:
            total = sum(c for c in counts if type(c) is int)
            return (
                f"has RLE counts that add up to {total:,}, not the image's {height}x{width} = "
                f"{height * width:,} pixels (or are not whole numbers >= 0)"
            )
        return None
    if not isinstance(counts, str | bytes):
        return f"has RLE counts of type {type(counts).__name__}; expected a list or a string"
    try:  # compressed: pycocotools refuses a string that does not decode to the image's pixels
        mask_utils.decode(segmentation_rle(segm, height, width))
    except (ValueError, TypeError, UnicodeEncodeError) as exc:
        return f"has RLE counts that do not decode ({first_line(exc)})"
    return None


def _check_image_file(check: CocoCheck, im: dict[str, Any], image_root: str, decode: bool) -> None:
    where = f"image id {im['id']}, '{im['file_name']}'"
    path = os.path.join(image_root, str(im["file_name"]))
    if not os.path.isfile(path):
        _refuse(
            check,
            _MISSING_FILE,
            where,
            f"is not under image_root '{image_root}'",
            "check image_root, or remove the image from the json",
        )
        return
    try:
        with Image.open(path) as file:
            if decode:
                file.load()
            width, height = file.size
            orientation, file_format, mode = _orientation(file, path), file.format, file.mode
    except (OSError, ValueError, SyntaxError) as exc:  # PIL's errors for broken files
        _refuse(
            check,
            "unreadable image",
            where,
            f"cannot be read as an image ({first_line(exc)})",
            "replace the file or remove the image from the json",
        )
        return
    if mode in _DEEP_MODES:
        _refuse(check, "deep pixels", where,
                f"has {_DEEP_MODES[mode]} pixels (Pillow mode {mode}), which an 8-bit RGB read "
                "clips to white or black", "convert the image to 8 bits a channel, scaled to "
                "its own range")  # fmt: skip
        return
    stored = (height, width)
    # Pillow opens a TIFF already turned (its size is the shown one); other formats are turned
    # when read (ImageOps.exif_transpose).
    turned_on_open = file_format == "TIFF"
    swaps = orientation in _SWAPS_SIDES and not turned_on_open
    shown = (width, height) if swaps else stored
    if orientation in _STORE_ORIENTATIONS:
        check.rotated[im["id"]] = orientation
    if not _has_size(im) or shown == (im["height"], im["width"]):
        return
    said = f"{im['height']}x{im['width']}"
    if swaps and stored == (im["height"], im["width"]):
        _refuse(
            check,
            "image size differs",
            where,
            f"is stored {height}x{width} (HxW) with EXIF orientation {orientation}, so it is "
            f"shown {shown[0]}x{shown[1]}; the json says {said}, the stored size",
            "its annotations were likely drawn on the unturned pixels: remove the file's "
            "EXIF orientation (exiftool -Orientation= -n FILE) or fix the annotations",
        )
        return
    _refuse(
        check,
        "image size differs",
        where,
        f"is {shown[0]}x{shown[1]} (HxW{', after its EXIF orientation' if swaps else ''}) but "
        f"the json says {said}",
        "fix the json's height/width or replace the image",
    )


def _orientation(file: Image.Image, path: str) -> int:
    """The EXIF orientation (1 when none or invalid), from the header. A PNG may put its eXIf
    chunk after the pixels, where Pillow finds it only by decoding them: the chunks are
    walked instead (their headers only)."""
    if file.format == "PNG" and "exif" not in file.info:
        exif = Image.Exif()
        data = _png_exif_after_pixels(path)
        if data is None:
            return 1
        exif.load(data)
    else:
        exif = file.getexif()
    value = exif.get(_EXIF_ORIENTATION, 1)
    return value if value in _STORE_ORIENTATIONS else 1


def _png_exif_after_pixels(path: str) -> bytes | None:
    """The eXIf chunk of a PNG, looked for by walking its chunk headers (no decoding)."""
    with open(path, "rb") as f:
        if f.read(8) != b"\x89PNG\r\n\x1a\n":
            return None
        while header := f.read(8):
            if len(header) < 8:
                return None
            length, kind = int.from_bytes(header[:4], "big"), header[4:]
            if kind == b"eXIf":
                return f.read(length)
            if kind == b"IEND":
                return None
            f.seek(length + 4, os.SEEK_CUR)  # the data and its CRC
    return None


def _repair(check: CocoCheck, anns: list[dict[str, Any]], sizes: dict[Any, Any]) -> None:
    """Fills ``iscrowd`` and ``area`` in place and counts clipped and left-out annotations."""
    counts = check.repaired
    counts.update(
        {
            "annotations without 'iscrowd' (set to 0)": 0,
            "without 'area' (the area of their segmentation)": 0,
            "boxes past the image border (clipped)": 0,
        }
    )
    for ann in anns:
        height, width = sizes[_hashable(ann["image_id"])]
        segm = ann["segmentation"]
        if isinstance(segm, list) and not all(map(_is_polygon, segm)):
            ann["segmentation"] = [p for p in segm if _is_polygon(p)]
            counts["polygons of fewer than 3 points beside a real one (dropped)"] += 1
        if "iscrowd" not in ann:
            ann["iscrowd"] = 0
            counts["annotations without 'iscrowd' (set to 0)"] += 1
        if "area" not in ann:
            ann["area"] = segmentation_area(ann["segmentation"], height, width)
            counts["without 'area' (the area of their segmentation)"] += 1
        if ann["iscrowd"]:
            check.left_out["crowd regions"] += 1
            continue
        x, y, w, h = ann["bbox"]
        if not has_area_inside(ann["bbox"], height, width):
            check.left_out["boxes with no area inside their image"] += 1
        elif x < 0 or y < 0 or x + w > width or y + h > height:
            counts["boxes past the image border (clipped)"] += 1
    counts["images stored turned or mirrored (read in their EXIF orientation)"] = len(check.rotated)


def has_area_inside(bbox: list[float], height: int, width: int) -> bool:
    """Whether an XYWH box clipped to a `height` x `width` image has an area left."""
    x, y, w, h = bbox
    return min(x + w, width) > max(x, 0) and min(y + h, height) > max(y, 0)


def segmentation_area(segm: Any, height: int, width: int) -> float:
    """The pixel area of a polygon list, uncompressed RLE or compressed RLE segmentation."""
    return float(mask_utils.area(segmentation_rle(segm, height, width)))


def segmentation_rle(segm: Any, height: int, width: int) -> dict[str, Any]:
    """The compressed RLE of a polygon list, uncompressed RLE or compressed RLE segmentation."""
    if isinstance(segm, list):
        return mask_utils.merge(mask_utils.frPyObjects(segm, height, width))
    if isinstance(segm["counts"], list):
        return mask_utils.frPyObjects(segm, height, width)
    counts = segm["counts"]
    if isinstance(counts, str):
        counts = counts.encode("ascii")
    return {"size": segm["size"], "counts": counts}


def _kinds(problems: list[Problem]) -> str:
    counts = Counter(p.kind for p in problems)
    return f" ({', '.join(f'{n:,} {kind}' for kind, n in counts.items())})" if counts else ""


def _category_table(data: dict[str, Any]) -> list[str]:
    cats = [c for c in data["categories"] if isinstance(c, dict) and "id" in c]
    anns = [a for a in data["annotations"] if isinstance(a, dict)]
    counts = Counter(_hashable(a.get("category_id")) for a in anns)
    crowd = Counter(_hashable(a.get("category_id")) for a in anns if a.get("iscrowd"))
    width = max((len(str(c.get("name", ""))) for c in cats), default=4)
    rows = [f"  {'id':>6}  {'name':<{width}}  {'annotations':>11}  {'crowd':>6}"]
    for c in sorted(cats, key=lambda c: (not isinstance(c["id"], int), str(c["id"]).zfill(12))):
        rows.append(
            f"  {c['id']!s:>6}  {str(c.get('name', '')):<{width}}  "
            f"{counts[_hashable(c['id'])]:>11,}  {crowd[_hashable(c['id'])]:>6,}"
        )
    return rows
