"""The COCO conformance corpus: small COCO instances files written the way real exports are.

Each `Case` writes one json and its images into a folder and says what pgtrain must do with it:
refuse it (the kind of problem and a pattern of the one-line error) or load it (the repairs and
left-out annotations it counts). Real pixels come from the photo scikit-learn ships
(``china.jpg``), so an orientation mistake shows in the pixels, not only in the sizes.
`tests/data/test_coco_conformance.py` runs every case; add a case here for every new quirk.
"""

import io
import json
import os
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from sklearn.datasets import load_sample_image

# PIL's transpose that stores a displayed image under each EXIF orientation (the inverse of the
# transpose `ImageOps.exif_transpose` applies when reading).
STORE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_90,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_270,
}
PHOTO_SIZE = (96, 128)  # (H, W) of the photo as displayed


def photo() -> np.ndarray:
    """A real photo (scikit-learn's china.jpg) shrunk to PHOTO_SIZE, H x W x 3 uint8."""
    image = Image.fromarray(load_sample_image("china.jpg"))
    return np.array(image.resize(PHOTO_SIZE[::-1], Image.Resampling.BILINEAR))


def image(image_id: int, height: int = 40, width: int = 60, name: str | None = None) -> dict:
    return {"id": image_id, "file_name": name or f"{image_id}.png", "height": height,
            "width": width}  # fmt: skip


def ann(ann_id: int, image_id: int, bbox: list[float], **extra: Any) -> dict:
    """A polygon annotation of its box; ``field=None`` in `extra` drops that field."""
    x, y, w, h = bbox
    out = {"id": ann_id, "image_id": image_id, "category_id": 1, "bbox": bbox,
           "segmentation": [[x, y, x + w, y, x + w, y + h, x, y + h]], "iscrowd": 0,
           "area": w * h}  # fmt: skip
    out.update(extra)
    return {k: v for k, v in out.items() if v is not None}


def write(
    folder: Path,
    images: list[dict],
    annotations: list[Any],
    categories: list[dict] | None = None,
    pixels: dict[str, Image.Image] | None = None,
) -> tuple[str, str]:
    """Writes the images (random pixels unless given in `pixels`) and the json; returns (json,
    image folder). Entries of `images` that are not dicts are written into the json as they are.
    """
    root = folder / "images"
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for im in images:
        if not isinstance(im, dict) or not isinstance(im.get("file_name"), str):
            continue
        path = root / im["file_name"]
        path.parent.mkdir(parents=True, exist_ok=True)
        if (pixels or {}).get(im["file_name"]) is not None:
            pixels[im["file_name"]].save(path, **pixels[im["file_name"]].info.get("save", {}))
        elif not path.exists() and min(im.get("height", 0), im.get("width", 0)) > 0:
            size = (int(im["height"]), int(im["width"]), 3)
            data = rng.integers(0, 255, size, dtype=np.uint8)
            Image.fromarray(data).save(path)
    data = {"images": images, "annotations": annotations,
            "categories": categories or [{"id": 1, "name": "thing"}]}  # fmt: skip
    json_file = folder / "instances.json"
    json_file.write_text(json.dumps(data))
    return str(json_file), str(root)


def exif_photo(orientation: int) -> Image.Image:
    """The photo stored as a phone stores it under `orientation` (pixels turned, EXIF tag)."""
    stored = Image.fromarray(photo())
    if orientation in STORE:
        stored = stored.transpose(STORE[orientation])
    exif = Image.Exif()
    exif[0x0112] = orientation
    stored.info["save"] = {"exif": exif, "quality": 95}
    return stored


@dataclass
class Case:
    """One quirk: how to write it, and what pgtrain must do with it.

    Attributes:
        name: the quirk, as a test id.
        write: writes the files into a folder; returns (json, image folder).
        refused: the kind of problem (`Problem.kind`) when the file must be refused, else None.
        error: a pattern of the one-line error of a refused case.
        repaired: repair -> count for a case that loads (each repair kind absent means 0).
        left_out: reason -> count of annotations left out of the training targets.
    """

    name: str
    write: Callable[[Path], tuple[str, str]]
    refused: str | None = None
    error: str = ""
    repaired: dict[str, int] = field(default_factory=dict)
    left_out: dict[str, int] = field(default_factory=dict)


def _one(*anns: dict, images: list | None = None, **kw: Any) -> Callable[[Path], tuple[str, str]]:
    return lambda folder: write(folder, images or [image(1)], list(anns), **kw)


def _exif(orientation: int, json_size: tuple[int, int]) -> Callable[[Path], tuple[str, str]]:
    def make(folder: Path) -> tuple[str, str]:
        entry = image(1, *json_size, name="phone.jpg")
        return write(folder, [entry], [ann(1, 1, [20, 10, 40, 30])],
                     pixels={"phone.jpg": exif_photo(orientation)})  # fmt: skip

    return make


def _file(name: str, content: bytes | Callable[[], Image.Image]) -> Callable[[Path], tuple]:
    """One 40x60 image whose file is `content` (bytes, or a PIL image to save)."""

    def make(folder: Path) -> tuple[str, str]:
        root = folder / "images"
        root.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            (root / name).write_bytes(content)
        else:
            content().save(root / name)
        return write(folder, [image(1, name=name)], [ann(1, 1, [5, 5, 20, 20])])

    return make


def _turned_file(name: str, writer: Callable[[Path], None], json_size: tuple[int, int]):
    """One image stored 40x60 (HxW) under EXIF orientation 6 by `writer(path)`, listed in the
    json with `json_size`; one annotation inside the shown image."""

    def make(folder: Path) -> tuple[str, str]:
        root = folder / "images"
        root.mkdir(parents=True, exist_ok=True)
        writer(root / name)
        return write(folder, [image(1, *json_size, name=name)], [ann(1, 1, [5, 5, 20, 20])])

    return make


def _orientation_exif(value: int) -> Image.Exif:
    exif = Image.Exif()
    exif[0x0112] = value
    return exif


def _tiff_turned(path: Path) -> None:
    Image.new("RGB", (60, 40), (200, 10, 10)).save(path, exif=_orientation_exif(6))


def png_exif_after_pixels(path: Path, orientation: int = 6) -> None:
    """A 40x60 PNG whose eXIf chunk comes after its pixels (as some tools write it)."""
    buffer = io.BytesIO()
    Image.new("RGB", (60, 40), (10, 200, 10)).save(buffer, format="PNG")
    data = buffer.getvalue()
    exif = _orientation_exif(orientation).tobytes()
    exif = exif[6:] if exif.startswith(b"Exif\x00\x00") else exif
    chunk = len(exif).to_bytes(4, "big") + b"eXIf" + exif
    chunk += zlib.crc32(b"eXIf" + exif).to_bytes(4, "big")
    end = data.rindex(b"IEND") - 4  # the IEND chunk's length field
    path.write_bytes(data[:end] + chunk + data[end:])


def _truncated_png() -> bytes:
    path = Path(os.environ.get("TMPDIR", "/tmp")) / f"pgtrain-corpus-{os.getpid()}.png"
    Image.fromarray(np.zeros((40, 60, 3), np.uint8)).save(path)
    data = path.read_bytes()
    path.unlink()
    return data[:20]  # the signature and part of the header: no size


_SHOWN = PHOTO_SIZE
_STORED_TURNED = PHOTO_SIZE[::-1]
_CLIPPED = "boxes past the image border (clipped)"
_NO_CROWD = "annotations without 'iscrowd' (set to 0)"
_NO_AREA = "without 'area' (the area of their segmentation)"
_TURNED = "images stored turned or mirrored (read in their EXIF orientation)"
_OUTSIDE = "boxes with no area inside their image"

CASES = [
    # --- repaired or left out, as Detectron2's loader does ---
    *[
        Case(f"exif orientation {o}", _exif(o, _SHOWN), repaired={_TURNED: 1})
        for o in (2, 3, 4, 5, 6, 7, 8)
    ],
    Case("exif orientation 1 (upright)", _exif(1, _SHOWN)),
    Case("no iscrowd, no area (hand-made)",
         _one(ann(1, 1, [10, 5, 20, 10], iscrowd=None, area=None),
              ann(2, 1, [1, 1, 4, 4], area=None)),
         repaired={_NO_CROWD: 1, _NO_AREA: 2}),
    Case("box half a pixel past the border",
         _one(ann(1, 1, [50, 5, 10.5, 10]), ann(2, 1, [-0.5, 20, 10, 10.5])),
         repaired={_CLIPPED: 2}),
    Case("box wholly outside the image", _one(ann(1, 1, [70, 5, 10, 10]), ann(2, 1, [1, 1, 5, 5])),
         left_out={_OUTSIDE: 1}),
    Case("zero-size box (a point)", _one(ann(1, 1, [5, 5, 0, 0]), ann(2, 1, [1, 1, 5, 5])),
         left_out={_OUTSIDE: 1}),
    Case("crowd region", _one(ann(1, 1, [1, 1, 5, 5], iscrowd=1), ann(2, 1, [9, 9, 5, 5])),
         left_out={"crowd regions": 1}),
    Case("image without annotations", _one(ann(1, 1, [1, 1, 5, 5]), images=[image(1), image(2)])),
    Case("file in a subfolder", _one(ann(1, 1, [1, 1, 5, 5]), images=[image(1, name="a/b/1.png")])),
    Case("category ids with gaps",
         _one({**ann(1, 1, [1, 1, 5, 5]), "category_id": 90},
              categories=[{"id": 90, "name": "z"}, {"id": 1, "name": "a"}])),
    Case("grayscale jpeg", _file("g.jpg", lambda: Image.new("L", (60, 40), 128))),
    Case("png with alpha", _file("a.png", lambda: Image.new("RGBA", (60, 40), (1, 2, 3, 4)))),
    Case("palette png", _file("p.png", lambda: Image.new("P", (60, 40), 7))),
    Case("cmyk jpeg", _file("c.jpg", lambda: Image.new("CMYK", (60, 40), (0, 50, 100, 0)))),
    Case("tiff turned by its orientation tag", _turned_file("t.tif", _tiff_turned, (60, 40)),
         repaired={_TURNED: 1}),
    Case("png with its exif after the pixels", _turned_file("e.png", png_exif_after_pixels,
         (60, 40)), repaired={_TURNED: 1}),
    Case("invalid exif orientation 9",
         _turned_file("9.jpg", lambda p: Image.new("RGB", (60, 40)).save(
             p, exif=_orientation_exif(9)), (40, 60))),
    Case("sizes written as floats",
         _one(ann(1, 1, [1, 1, 5, 5]), images=[{**image(1), "height": 40.0, "width": 60.0}]),
         repaired={"image sizes written as floats (read as integers)": 1}),
    Case("a sliver polygon beside a real one",
         _one(ann(1, 1, [1, 1, 5, 5], segmentation=[[1, 1, 6, 1, 6, 6, 1, 6], [3, 3, 4, 4]])),
         repaired={"polygons of fewer than 3 points beside a real one (dropped)": 1}),
    # --- refused, with the file, the ids and the field ---
    Case("exif photo whose json has the stored size", _exif(6, _STORED_TURNED),
         refused="image size differs", error=r"image id 1, 'phone\.jpg': is stored 128x96 .*"
         r"EXIF orientation 6.*exiftool"),
    Case("image size differs from the json", _one(ann(1, 1, [1, 1, 5, 5]),
         images=[image(1, 41, 60)], pixels={"1.png": Image.new("RGB", (60, 40))}),
         refused="image size differs", error=r"is 40x60 \(HxW.* the json says 41x60"),
    Case("missing image file", lambda f: _without(write(f, [image(1), image(2)], []), "2.png"),
         refused="missing image file", error=r"1 of 2 image files .*image id 2, '2\.png'"),
    Case("unreadable image file", _file("x.png", b"this is not a png"),
         refused="unreadable image", error=r"image id 1, 'x\.png': cannot be read as an image"),
    Case("truncated header", _file("t.png", _truncated_png()),
         refused="unreadable image", error=r"'t\.png': cannot be read"),
    Case("duplicate image ids (merged exports)",
         _one(ann(1, 1, [1, 1, 5, 5]),
              images=[image(1), image(2), {**image(2), "file_name": "3.png"}]),
         refused="duplicate image id", error=r"image id 2: occurs 2 times \(merged exports\?\)"),
    Case("duplicate annotation ids",
         _one(ann(7, 1, [1, 1, 5, 5]), ann(7, 2, [2, 2, 5, 5]), images=[image(1), image(2)]),
         refused="duplicate annotation id", error=r"annotation id 7: occurs 2 times"),
    Case("duplicate category names",
         _one(ann(1, 1, [1, 1, 5, 5]), categories=[{"id": 1, "name": "a"}, {"id": 2, "name": "a"}]),
         refused="duplicate category name", error=r"category name 'a': is used by 2 categories"),
    Case("unknown category", _one({**ann(1, 1, [1, 1, 5, 5]), "category_id": 3}),
         refused="unknown category", error=r"annotation id 1: has category_id 3, which is not"),
    Case("unknown image", _one(ann(1, 9, [1, 1, 5, 5])),
         refused="unknown image_id", error=r"annotation id 1: refers to image_id 9"),
    Case("bbox of two numbers", _one({**ann(1, 1, [1, 1, 5, 5]), "bbox": [1, 2]}),
         refused="malformed bbox", error=r"annotation id 1: field 'bbox' is \[1, 2\]; expected"),
    Case("bbox as x0 y0 x1 y1 gone negative",
         _one({**ann(1, 1, [1, 1, 5, 5]), "bbox": [9, 9, 5, -2]}),
         refused="malformed bbox", error=r"negative width or height"),
    Case("bbox with a string", _one({**ann(1, 1, [1, 1, 5, 5]), "bbox": [1, 2, "3", 4]}),
         refused="malformed bbox", error=r"'bbox' is \[1, 2, '3', 4\]"),
    Case("bbox with NaN", _one({**ann(1, 1, [1, 1, 5, 5]), "bbox": [1, 2, float("nan"), 4]}),
         refused="malformed bbox", error=r"4 finite numbers"),
    Case("empty segmentation",
         _one(ann(1, 1, [1, 1, 5, 5], segmentation=[]), ann(2, 1, [1, 1, 5, 5])),
         refused="malformed segmentation", error=r"image id 1, annotation id 1: field "
         r"'segmentation' is an empty polygon list"),
    Case("polygon of two points", _one(ann(1, 1, [1, 1, 5, 5], segmentation=[[1, 1, 5, 1, 5]])),
         refused="malformed segmentation", error=r"3\+ points"),
    Case("rle size differs from the image",
         _one(ann(1, 1, [1, 1, 5, 5], segmentation={"size": [30, 60], "counts": [0, 10]})),
         refused="malformed segmentation",
         error=r"RLE size \[30, 60\] but the image is \[40, 60\]"),
    Case("rle without size", _one(ann(1, 1, [1, 1, 5, 5], segmentation={"counts": [0, 10]})),
         refused="malformed segmentation", error=r"neither a list of polygons nor an RLE"),
    Case("iscrowd of 2", _one(ann(1, 1, [1, 1, 5, 5], iscrowd=2)),
         refused="malformed iscrowd", error=r"'iscrowd' is 2, not 0 or 1"),
    Case("area as text", _one(ann(1, 1, [1, 1, 5, 5], area="25")),
         refused="malformed area", error=r"'area' is '25'"),
    Case("annotation without bbox",
         _one({k: v for k, v in ann(1, 1, [1, 1, 5, 5]).items() if k != "bbox"}),
         refused="missing field", error=r"image id 1, annotation id 1: has no 'bbox'"),
    Case("image of width 0", _one(images=[image(1, 40, 0)]),
         refused="malformed size", error=r"image id 1: has height 40 and width 0"),
    Case("png with its exif after the pixels, json of the stored size",
         _turned_file("e.png", png_exif_after_pixels, (40, 60)),
         refused="image size differs", error=r"EXIF orientation 6.*exiftool"),
    Case("16-bit png", _file("d.png", lambda: Image.new("I;16", (60, 40), 4000)),
         refused="deep pixels", error=r"'d\.png': has 16-bit pixels \(Pillow mode I;16\)"),
    Case("rle counts that do not add up",
         _one(ann(1, 1, [1, 1, 5, 5], segmentation={"size": [40, 60], "counts": [0, 10, 5]})),
         refused="malformed segmentation", error=r"RLE counts that add up to 15, not the image's"
         r" 40x60 = 2,400 pixels"),
    Case("corrupt rle string",
         _one(ann(1, 1, [1, 1, 5, 5], segmentation={"size": [40, 60], "counts": "#&%!~~"})),
         refused="malformed segmentation", error=r"RLE counts that do not decode"),
    Case("rle size that is not a list",
         _one(ann(1, 1, [1, 1, 5, 5], segmentation={"size": 40, "counts": [2400]})),
         refused="malformed segmentation", error=r"RLE size 40; expected \[height, width\]"),
    Case("string image ids", _one(ann(1, "img-1", [1, 1, 5, 5]),
         images=[{**image(1), "id": "img-1"}]),
         refused="malformed image id", error=r"image id 'img-1': is a str, not a whole number"),
    Case("string category ids", _one({**ann(1, 1, [1, 1, 5, 5]), "category_id": "a"},
         categories=[{"id": "a", "name": "a"}]),
         refused="malformed category id", error=r"category id 'a': is a str"),
    Case("image id 1.5", _one(ann(1, 1.5, [1, 1, 5, 5]), images=[{**image(1), "id": 1.5}]),
         refused="malformed image id", error=r"image id 1\.5: is a float, not a whole number"),
    Case("negative area", _one(ann(1, 1, [1, 1, 5, 5], area=-4)),
         refused="malformed area", error=r"'area' is -4, not a number >= 0"),
    Case("one file under two image ids (merged exports)",
         _one(ann(1, 1, [1, 1, 5, 5]), images=[image(1), {**image(2), "file_name": "1.png"}]),
         refused="duplicate file_name", error=r"file '1\.png': is listed under image ids 1, 2"),
    Case("box-only export", _one(ann(1, 1, [1, 1, 5, 5], segmentation=[]),
                                 {k: v for k, v in ann(2, 1, [2, 2, 5, 5]).items()
                                  if k != "segmentation"}),
         refused="no segmentations", error=r"annotations: none of the 2 annotations has a "
         r"segmentation \(a box-only export\); Mask R-CNN learns masks"),
    Case("image that is not an object", _one(images=[image(1), 5]),
         refused="not an object", error=r"images\[1\]: is not a json object"),
]  # fmt: skip


def _without(files: tuple[str, str], name: str) -> tuple[str, str]:
    os.remove(os.path.join(files[1], name))
    return files
