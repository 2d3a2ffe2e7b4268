"""Check a COCO instances dataset whole, as training checks it, and print what was found.

    python tools/check_dataset.py --json instances.json --image-root images/
    python tools/check_dataset.py --config projects/maskrcnn/config.py           # train and test
    python tools/check_dataset.py --config FILE --split test --visualize 8 --output-dir vis/

The summary: images (and how many have no annotation), annotations per category, what is
repaired when the dataset is built (missing iscrowd / area, boxes past the border, EXIF
orientation), what training leaves out (crowd regions, boxes outside the image) and every refused
item with its image and annotation id. ``--decode`` decodes every image's pixels too (finds
truncated files; slower). ``--visualize N`` draws the annotations over the first N images, as
the dataset reads them (``--source annotation``) or after the training transforms
(``--source dataloader``), one PNG an image, as Detectron2's visualize_data.py does.

Exit status: 0 when nothing is refused, 1 when something is, 2 for a usage or config error.
"""

import argparse
import logging
import os
import sys

from pgtrain.config import instantiate
from pgtrain.data.coco import COCOInstanceDataset
from pgtrain.data.coco_check import CocoCheck, check_coco
from pgtrain.data.preflight import SPLITS, CocoSource, coco_datasets
from pgtrain.engine import prepare_run, user_errors_exit
from pgtrain.errors import ConfigError
from pgtrain.utils.file_io import output_path
from pgtrain.utils.logger import setup_logger
from pgtrain.utils.visualization import save_prediction_grid

logger = logging.getLogger("pgtrain.check_dataset")


def main(argv: list[str] | None = None) -> int:
    """Checks the datasets named on the command line or in a config; returns the exit status."""
    args = _parse(argv)
    setup_logger()
    refused = False
    for source in _datasets(args):
        check = check_coco(source.json_file, source.image_root, decode=args.decode)
        print(f"[{source.split}] " + check.summary(args.max_problems))
        refused |= bool(check.refused)
        if args.visualize and source.image_root:
            _visualize(args, source, check)
    return 1 if refused else 0


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", metavar="FILE", help="a COCO instances json")
    parser.add_argument("--image-root", metavar="DIR", help="the folder of the json's images")
    parser.add_argument("--config", metavar="FILE", help="check the datasets of this config")
    parser.add_argument("--split", choices=("train", "test", "both"), default="both")
    parser.add_argument("--decode", action="store_true", help="decode every image's pixels")
    parser.add_argument("--max-problems", type=int, default=20, metavar="N",
                        help="refused items listed per dataset (default 20)")  # fmt: skip
    parser.add_argument("--visualize", type=int, default=0, metavar="N",
                        help="draw the annotations over the first N images")  # fmt: skip
    parser.add_argument("--source", choices=("annotation", "dataloader"), default="annotation")
    parser.add_argument("--output-dir", metavar="DIR", help="where --visualize writes its PNGs")
    parser.add_argument("opts", nargs="*", metavar="key=value", help="config overrides")
    args = parser.parse_intermixed_args(argv)
    if bool(args.json) == bool(args.config):
        parser.error("give either --json (with --image-root) or --config")
    if args.opts and not args.config:
        parser.error(f"overrides {args.opts} need --config")
    if args.visualize < 0 or args.max_problems < 0:
        parser.error("--visualize and --max-problems take a number >= 0")
    if args.visualize and not args.output_dir:
        parser.error("--visualize needs --output-dir")
    if args.visualize and args.json and not args.image_root:
        parser.error("--visualize needs --image-root (the images to draw on)")
    if args.output_dir:
        output_path(args.output_dir, "--output-dir", folder=True)  # before the check runs
    if args.json and args.source == "dataloader":
        parser.error("--source dataloader needs --config (the transforms are the config's)")
    return args


def _datasets(args: argparse.Namespace) -> list[CocoSource]:
    """The datasets to check: the one of --json, or the COCO datasets of the config's splits."""
    if args.json:
        if not os.path.isfile(args.json):
            raise ConfigError(f"--json '{args.json}' does not exist; pass a COCO instances json")
        if args.image_root and not os.path.isdir(args.image_root):
            raise ConfigError(f"--image-root '{args.image_root}' is not a folder")
        return [CocoSource("--json", "json", args.json, args.image_root, None)]
    cfg = prepare_run(args, settings=False).cfg  # the datasets alone: train.* is not read
    splits = SPLITS if args.split == "both" else (args.split,)
    sources = list(coco_datasets(cfg, splits))
    if not sources:
        raise ConfigError(
            f"{args.config}: no COCO dataset in dataloader.{'/'.join(splits)}.dataset (a "
            "COCOInstanceDataset with json_file and image_root); use --json and --image-root"
        )
    return sources


def _visualize(args: argparse.Namespace, source: CocoSource, check: CocoCheck) -> None:
    split, node = source.split, source.node
    if check.refused:
        print(f"[{split}] not visualized: the dataset is refused (see above)")
        return
    transforms = None
    if args.source == "dataloader" and node is not None and node.get("transforms") is not None:
        transforms = instantiate(node.transforms, f"{source.key}.transforms")
    dataset = COCOInstanceDataset(check.json_file, check.image_root, transforms=transforms)
    folder = os.path.join(args.output_dir, split)
    for index in range(min(args.visualize, len(dataset))):
        image, target = dataset[index]
        info = dataset.image_info(index)
        stem = os.path.splitext(os.path.basename(info["file_name"]))[0]
        path = os.path.join(folder, f"{info['id']}_{stem}.png")
        save_prediction_grid([image], [target], path, class_names=dataset.class_names)
    print(f"[{split}] {min(args.visualize, len(dataset))} images drawn under {folder}")


def cli() -> None:
    """The command line: user errors as one line and exit status 2."""
    with user_errors_exit():
        sys.exit(main())


if __name__ == "__main__":
    cli()
