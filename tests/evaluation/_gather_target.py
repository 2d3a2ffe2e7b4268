"""The function a 2-process test runs: each rank evaluates its share of the images.

Spawned processes import this module by name.
"""

import json
import os

from pycocotools.coco import COCO

from pgtrain.evaluation.coco import COCOEvaluator
from pgtrain.utils import comm
from tests.evaluation._coco_data import IMAGES, empty_prediction, perfect_predictions


def evaluate_shard(json_file: str, out_dir: str) -> None:
    """Rank r predicts every other image perfectly; writes ``metrics{rank}.json``.

    Rank 1 also sees image 1 (as a padded sampler would) but predicts nothing there: the
    evaluator must count each image once, from the first rank that has it.
    """
    rank = comm.get_rank()
    coco = COCO(json_file)
    evaluator = COCOEvaluator(json_file, output_dir=os.path.join(out_dir, "eval"))
    image_ids = [im["id"] for im in IMAGES][rank::2]
    pairs = [perfect_predictions(coco, i) for i in image_ids]
    if rank == 1:
        pairs.append(empty_prediction(coco, 1))
    for inputs, prediction in pairs:
        evaluator.process([inputs], [prediction])
    metrics = evaluator.evaluate()
    with open(os.path.join(out_dir, f"metrics{rank}.json"), "w") as f:
        json.dump(metrics, f)
