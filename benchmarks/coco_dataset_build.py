"""Building a COCOInstanceDataset (every annotation checked and repaired, every image file's
header read: present, an image, its size after EXIF orientation) against reading the same json
with pycocotools alone, at COCO train2017's size.

    .venv/bin/python benchmarks/coco_dataset_build.py [--images 118287] [--per-image 7.3]

The json (polygons, a few annotations without iscrowd / area) and 640x480 JPEG files (every 50th
a phone photo stored turned, with its EXIF orientation) are written to a temporary folder; the
loads run in this process, alternating, and the script prints the times and their ratios
(median of the repeats; the image files are in the page cache, as on a second run). No
threshold is asserted.
"""

import argparse
import contextlib
import io
import json
import os
import random
import statistics
import tempfile
import time

from PIL import Image
from pycocotools.coco import COCO

from pgtrain.data.coco import COCOInstanceDataset
from pgtrain.data.coco_check import check_coco


def _jpeg_bytes(folder: str, orientation: int) -> bytes:
    """A flat 640x480 JPEG as displayed, stored as a phone stores it under `orientation`."""
    image = Image.new("RGB", (640, 480), (90, 120, 150))
    exif = Image.Exif()
    if orientation == 6:
        image = image.transpose(Image.Transpose.ROTATE_90)
        exif[0x0112] = 6
    path = os.path.join(folder, "one.jpg")
    image.save(path, exif=exif)
    with open(path, "rb") as f:
        return f.read()


def write_corpus(folder: str, images: int, per_image: float) -> tuple[str, str]:
    rng = random.Random(0)
    root = os.path.join(folder, "images")
    os.makedirs(root)
    data = {"images": [], "annotations": [], "categories": [{"id": c, "name": f"c{c}"}
                                                             for c in range(1, 81)]}  # fmt: skip
    ann_id = 0
    upright, turned = _jpeg_bytes(folder, 1), _jpeg_bytes(folder, 6)
    for i in range(1, images + 1):
        name = f"{i:012d}.jpg"
        with open(os.path.join(root, name), "wb") as f:
            f.write(turned if i % 50 == 0 else upright)
        data["images"].append({"id": i, "file_name": name, "height": 480, "width": 640})
        for _ in range(rng.randint(0, round(2 * per_image))):
            ann_id += 1
            x, y, w, h = (
                rng.uniform(0, 500),
                rng.uniform(0, 400),
                rng.uniform(2, 130),
                rng.uniform(2, 70),
            )
            ann = {"id": ann_id, "image_id": i, "category_id": rng.randint(1, 80),
                   "bbox": [x, y, w, h], "iscrowd": 0, "area": w * h,
                   "segmentation": [[x, y, x + w, y, x + w, y + h, x, y + h]]}  # fmt: skip
            if ann_id % 100 == 0:  # hand-made lines: no iscrowd / area
                del ann["iscrowd"], ann["area"]
            data["annotations"].append(ann)
    json_file = os.path.join(folder, "instances.json")
    with open(json_file, "w") as f:
        json.dump(data, f)
    return json_file, root


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=118_287)
    parser.add_argument("--per-image", type=float, default=7.3)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        json_file, root = write_corpus(folder, args.images, args.per_image)
        size = os.path.getsize(json_file) / 2**20
        plain, json_only, checked = [], [], []
        for _ in range(args.repeats):
            start = time.perf_counter()
            with contextlib.redirect_stdout(io.StringIO()):
                COCO(json_file)
            plain.append(time.perf_counter() - start)
            start = time.perf_counter()
            check_coco(json_file).coco()
            json_only.append(time.perf_counter() - start)
            start = time.perf_counter()
            dataset = COCOInstanceDataset(json_file, root)
            checked.append(time.perf_counter() - start)
        anns = len(dataset.coco.dataset["annotations"])
        base = statistics.median(plain)
        print(f"{args.images:,} images, {anns:,} annotations, json {size:.0f} MiB")
        print(f"pycocotools COCO(json):                    {base:6.1f} s")
        for label, times in (
            ("json checked and repaired (no images)", json_only),
            ("COCOInstanceDataset (json + image headers)", checked),
        ):
            t = statistics.median(times)
            print(f"{label + ':':43s}{t:6.1f} s   {t / base:5.2f}x pycocotools")


if __name__ == "__main__":
    main()
