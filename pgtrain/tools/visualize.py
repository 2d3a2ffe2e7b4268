"""Save a PNG of a trained detector's predicted masks over validation images.

    python tools/visualize.py --config projects/maskrcnn/config.py            # last checkpoint
    python tools/visualize.py --config FILE --weights model_final.pth --num-images 12 --out p.png

Weights: ``--weights``, else the last checkpoint in ``train.output_dir``, else
``train.init_checkpoint``. Images: the first ``--num-images`` of ``dataloader.test.dataset``.
The PNG goes to ``--out`` (default ``<train.output_dir>/predictions.png``).
"""

import argparse
import logging
import os

import torch

from pgtrain.checkpoint import Checkpointer
from pgtrain.config import instantiate
from pgtrain.engine import model_with_weights, prepare_run, user_errors_exit
from pgtrain.errors import ConfigError
from pgtrain.utils.file_io import output_path
from pgtrain.utils.logger import setup_logger
from pgtrain.utils.visualization import prediction_to_cpu, save_prediction_grid

logger = logging.getLogger("pgtrain.visualize")


def main(argv=None):
    """Loads the model and weights, predicts on a few validation images, writes the grid."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, metavar="FILE")
    parser.add_argument("--weights", default="", help="a checkpoint (default: the last one)")
    parser.add_argument("--num-images", type=int, default=8)
    parser.add_argument("--score-threshold", type=float, default=0.5)
    parser.add_argument("--out", default="", metavar="PNG")
    parser.add_argument("opts", nargs="*", metavar="key=value")
    args = parser.parse_intermixed_args(argv)
    setup_logger()
    cfg = prepare_run(args).cfg
    if "test" not in cfg.dataloader or "dataset" not in cfg.dataloader.test:
        raise ConfigError("dataloader.test.dataset is needed to pick validation images")
    # The given weights, else the run's last checkpoint, else train.init_checkpoint (an
    # untrained model is drawn too, and said so), loaded as training loads a run's weights.
    last = Checkpointer(torch.nn.Module(), cfg.train.output_dir).get_checkpoint_file()
    weights = args.weights or last or cfg.train.get("init_checkpoint") or ""
    model, report = model_with_weights(cfg, weights)
    model.eval()
    logger.info("Weights: %s", report.path or "none (untrained model)")
    dataset = instantiate(cfg.dataloader.test.dataset, "dataloader.test.dataset")
    items = [dataset[i] for i in range(min(args.num_images, len(dataset)))]
    with torch.no_grad():
        predictions = model(items)
    out = output_path(args.out or os.path.join(cfg.train.output_dir, "predictions.png"), "--out")
    save_prediction_grid(
        [image for image, _ in items],
        [prediction_to_cpu(p) for p in predictions],
        out,
        class_names=dataset.class_names,
        score_threshold=args.score_threshold,
    )
    logger.info("Predicted masks over %d validation images saved to %s", len(items), out)


def cli() -> None:
    """The command line: ``pgtrain visualize`` / ``python tools/visualize.py``."""
    with user_errors_exit():
        main()


if __name__ == "__main__":
    cli()
