"""Run a trained detector on your own images: drawn predictions plus COCO-format results.

    python tools/predict.py --config projects/maskrcnn/config.py --weights model_final.pth \\
        --input photos/ "more/*.jpg" one.png --output predictions/
    python tools/predict.py --config FILE --input photos/ --output out/ --score-threshold 0.3 \\
        --batch-size 4 --device cuda model.min_size=512 model.max_size=853

Inputs (``--input``): image files, folders (the jpg/jpeg/png/bmp/tif/tiff/webp images directly
inside, sorted by name) and globs (quoted; ``**`` crosses folders), in any mix; a file given twice
is predicted once. Images are read as they are displayed (EXIF orientation applied) in RGB.

Weights: ``--weights``, else the last checkpoint in ``train.output_dir``, else
``train.init_checkpoint``; they must fit the model whole.

Outputs, all in ``--output`` (nothing is written elsewhere):

- ``<stem>.jpg`` (``<stem>.png`` for a png input; ``<stem>_2.jpg``... when stems repeat): the
  image with the masks, boxes, class names and scores of the detections at ``--score-threshold``
  or above;
- ``coco_results.json``: those detections in the COCO results format (``image_id``,
  ``category_id``: the dataset's own category id, ``bbox`` [x, y, w, h] in the pixels of the
  displayed image, ``score``, ``segmentation``: RLE);
- ``images.json``: ``{"images": [{"id", "file_name" (absolute path), "width", "height",
  "output"}], "categories": [{"id", "name"}]}``, so that
  ``COCO().dataset = images_json; createIndex(); loadRes("coco_results.json")`` works.

Class names and category ids come from the COCO json of ``dataloader.test.dataset`` (labels 1..K
are its category ids in sorted order, as the COCO evaluator maps them); without that json they
are "class N" and N.
"""

import argparse
import json
import logging
import math
import os
import re
import time
from typing import Any

import numpy as np
import torch
from PIL import Image

from pgtrain.checkpoint import Checkpointer
from pgtrain.config import instantiate
from pgtrain.data.image_files import check_image_file, list_image_files, read_image
from pgtrain.engine import model_with_weights, prepare_run, require_whole_fit, user_errors_exit
from pgtrain.errors import ConfigError, PgtrainError
from pgtrain.evaluation.coco_results import load_ground_truth, prediction_to_coco_results
from pgtrain.utils.file_io import is_local, output_path, write_text_atomically
from pgtrain.utils.logger import setup_logger
from pgtrain.utils.progress import Progress
from pgtrain.utils.visualization import draw_instances, scaled_font_size, scaled_line_width

logger = logging.getLogger("pgtrain.predict")

RESULTS_FILE = "coco_results.json"
IMAGES_FILE = "images.json"

# An override (key.path=value) that argparse gave to --input, whose list it cannot end.
_OVERRIDE = re.compile(r"^[A-Za-z_][\w.\-]*=")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Predicts on every input image and writes the drawn images and the two json files.

    Returns:
        ``{"images": number of images, "detections": number of detections written,
        "output": the output folder}``.
    """
    args = _parse(argv)
    setup_logger()
    cfg = prepare_run(args).cfg
    files = list_image_files(args.input, "--input")
    for path in files:  # headers only: a file that is no image stops us before the model loads
        check_image_file(path)
    weights = _weights(cfg, args.weights)
    if not is_local(args.output):
        raise ConfigError(f"--output '{args.output}' must be a local folder")
    model, report = model_with_weights(cfg, weights)
    require_whole_fit(report, weights)
    model.eval()
    _set_score_threshold(model, args.score_threshold)
    categories, label_to_category_id = _categories(cfg, model)
    class_names = [c["name"] for c in categories]
    out_dir = output_path(args.output, "--output", folder=True)
    logger.info("Weights: %s; %d images; device %s", weights, len(files), _device(model))

    results: list[dict[str, Any]] = []
    images: list[dict[str, Any]] = []
    names: set[str] = set()
    start = time.perf_counter()
    with Progress("Predicting", len(files), logger, unit="image") as progress, torch.no_grad():
        for first in range(0, len(files), args.batch_size):
            paths = files[first : first + args.batch_size]
            arrays = [read_image(path) for path in paths]
            outputs = model([torch.from_numpy(a).permute(2, 0, 1) for a in arrays])
            for path, array, output in zip(paths, arrays, outputs, strict=True):
                image_id = len(images) + 1
                height, width = array.shape[:2]
                prediction = _kept(output, args.score_threshold)
                drawn = draw_instances(
                    array,
                    prediction,
                    class_names=class_names,
                    score_threshold=args.score_threshold,
                    line_width=scaled_line_width(height, width),
                    font_size=scaled_font_size(height, width),
                )
                out_file = os.path.join(out_dir, _output_name(path, names))
                _save_image(drawn, out_file)
                results += prediction_to_coco_results(
                    prediction,
                    image_id=image_id,
                    given_size=(height, width),
                    orig_size=(height, width),
                    label_to_category_id=label_to_category_id,
                    with_masks="masks" in prediction,
                )
                images.append(
                    {
                        "id": image_id,
                        "file_name": os.path.abspath(path),
                        "width": width,
                        "height": height,
                        "output": out_file,
                    }
                )
            progress.update(len(paths))
    write_text_atomically(os.path.join(out_dir, RESULTS_FILE), json.dumps(results))
    index = {"images": images, "categories": categories}
    write_text_atomically(os.path.join(out_dir, IMAGES_FILE), json.dumps(index, indent=1))
    logger.info(
        "%d detections (score >= %g) on %d images in %.1f s: drawn images, %s and %s in %s",
        len(results),
        args.score_threshold,
        len(images),
        time.perf_counter() - start,
        RESULTS_FILE,
        IMAGES_FILE,
        out_dir,
    )
    return {"images": len(images), "detections": len(results), "output": out_dir}


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        epilog="Overrides: key.path=value, e.g. model.min_size=512 model.max_size=853",
    )
    parser.add_argument("--config", required=True, metavar="FILE")
    parser.add_argument("--weights", default="", help="a checkpoint (default: the last one)")
    parser.add_argument(
        "--input", nargs="+", required=True, metavar="PATH", help="image files, folders, globs"
    )
    parser.add_argument("--output", required=True, metavar="FOLDER")
    parser.add_argument("--batch-size", type=int, default=1, help="images per forward pass")
    parser.add_argument("--device", default="", help="cpu, cuda, cuda:1 (default: train.device)")
    parser.add_argument(
        "--score-threshold", type=float, default=0.5, help="least score drawn and written"
    )
    parser.add_argument("opts", nargs="*", metavar="key=value", help="config overrides")
    args = parser.parse_intermixed_args(argv)
    # `--input a.jpg model.min_size=512`: the override went to --input; give it back.
    given = [p for p in args.input if not (_OVERRIDE.match(p) and not os.path.exists(p))]
    args.opts = [p for p in args.input if p not in given] + list(args.opts)
    args.input = given
    if not args.input:
        raise ConfigError("--input: give at least one image file, folder or glob")
    threshold = args.score_threshold
    if not (math.isfinite(threshold) and 0.0 <= threshold <= 1.0):
        raise ConfigError(f"--score-threshold must be within [0, 1], got {threshold:g}")
    if args.batch_size < 1:
        raise ConfigError(f"--batch-size must be at least 1, got {args.batch_size}")
    if args.device:
        args.opts.append(f"train.device={args.device}")
    return args


def _weights(cfg: Any, given: str) -> str:
    """--weights, else the run's last checkpoint, else train.init_checkpoint; refuses none."""
    if given:
        weights, source = given, "--weights"
    else:
        output_dir = cfg.train.get("output_dir") or ""
        weights = Checkpointer(torch.nn.Module(), output_dir).get_checkpoint_file()
        source = f"the last checkpoint of train.output_dir '{output_dir}'"
        if not weights:
            weights, source = cfg.train.get("init_checkpoint") or "", "train.init_checkpoint"
        if not weights:
            raise ConfigError(
                f"no weights to predict with: --weights is not given, train.output_dir "
                f"'{output_dir}' has no checkpoint and train.init_checkpoint is empty; pass "
                "--weights <checkpoint file>"
            )
    if is_local(weights) and not os.path.isfile(weights):
        raise ConfigError(f"{source} '{weights}' does not exist; pass --weights <checkpoint file>")
    return weights


def _set_score_threshold(model: torch.nn.Module, threshold: float) -> None:
    """Makes torchvision's box head keep every detection scoring `threshold` or more and few
    others (its own filter, 0.05 by default, is ``score > score_thresh`` in float32), so masks
    are pasted for about the detections that are kept; `_kept` drops the rest exactly."""
    heads = getattr(model, "roi_heads", None)
    if heads is not None and hasattr(heads, "score_thresh"):
        # One float32 step below the float32 nearest `threshold`: no float32 score >= threshold
        # is at or below it.
        heads.score_thresh = float(np.nextafter(np.float32(threshold), np.float32(-np.inf)))


def _categories(cfg: Any, model: torch.nn.Module) -> tuple[list[dict[str, Any]], dict[int, int]]:
    """The categories (id, name) of labels 1..K and label -> category id: those of the COCO json
    of ``dataloader.test.dataset`` (mapped as the COCO evaluator maps them), else "class N"."""
    num_classes = getattr(model, "num_classes", None) or cfg.model.get("num_classes")
    if not isinstance(num_classes, int) or num_classes < 2:
        raise ConfigError(
            "the model has no num_classes (number of classes + background); predict needs a "
            "detector such as MaskRCNN"
        )
    reason = _dataset_categories_missing(cfg)
    if reason is None:
        json_file = cfg.dataloader.test.dataset.json_file
        try:
            json_file = instantiate(json_file, "dataloader.test.dataset.json_file")
            truth = load_ground_truth(json_file)
        except PgtrainError as e:
            reason = str(e)
        else:
            mapping = truth.label_to_category_id
            if len(mapping) == num_classes - 1:
                categories = [
                    {"id": mapping[label], "name": name}
                    for label, name in zip(sorted(mapping), truth.class_names, strict=True)
                ]
                return categories, mapping
            reason = (
                f"'{json_file}' has {len(mapping)} categories but the model has "
                f"{num_classes - 1} classes (model.num_classes={num_classes})"
            )
    logger.warning(
        "Class names unknown (%s): labels are written as 'class N', category id N", reason
    )
    categories = [{"id": n, "name": f"class {n}"} for n in range(1, num_classes)]
    return categories, {n: n for n in range(1, num_classes)}


def _dataset_categories_missing(cfg: Any) -> str | None:
    """Why the config names no COCO json for the test dataset, or None when it names one."""
    dataloader = cfg.get("dataloader") or {}
    dataset = (dataloader.get("test") or {}).get("dataset") or {}
    if "json_file" not in dataset:
        return "dataloader.test.dataset has no json_file"
    return None


def _kept(prediction: dict[str, Any], threshold: float) -> dict[str, Any]:
    """The prediction on the CPU, without the detections scoring below `threshold`."""
    keep = prediction["scores"].detach().cpu().double() >= threshold  # as the json compares
    out = {}
    for key, value in prediction.items():
        if isinstance(value, torch.Tensor):
            value = value.detach().cpu()
            if value.dim() and len(value) == len(keep):
                value = value[keep]
        out[key] = value
    return out


def _output_name(path: str, used: set[str]) -> str:
    """``<stem>.png`` for a png, else ``<stem>.jpg``; ``<stem>_2``... when a name is taken."""
    stem, ext = os.path.splitext(os.path.basename(path))
    ext = ".png" if ext.lower() == ".png" else ".jpg"
    name, n = stem + ext, 1
    while name.lower() in used:
        n += 1
        name = f"{stem}_{n}{ext}"
    used.add(name.lower())
    return name


def _save_image(array: Any, path: str) -> None:
    image = Image.fromarray(array)
    if path.endswith(".png"):
        image.save(path, format="PNG")
    else:
        image.save(path, format="JPEG", quality=95)


def _device(model: torch.nn.Module) -> str:
    return str(next(model.parameters()).device)


def cli() -> None:
    """The command line: ``pgtrain predict`` / ``python tools/predict.py``."""
    with user_errors_exit():
        main()


if __name__ == "__main__":
    cli()
