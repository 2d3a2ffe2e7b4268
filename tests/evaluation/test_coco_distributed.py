import json

import pytest

from pgtrain.engine import launch
from pgtrain.evaluation.coco import RESULTS_FILE
from tests.evaluation._coco_data import NUM_INSTANCES, write_instances_json
from tests.evaluation._gather_target import evaluate_shard


def test_two_gloo_processes_gather_results_and_return_the_same_metrics(tmp_path, monkeypatch):
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(var, raising=False)
    json_file = write_instances_json(str(tmp_path / "instances.json"))
    launch(evaluate_shard, 2, args=(json_file, str(tmp_path)), backend="gloo")
    metrics = [json.loads((tmp_path / f"metrics{r}.json").read_text()) for r in (0, 1)]
    assert metrics[0] == metrics[1]
    # Rank 0 has image 1's objects, rank 1 image 2's: AP 1 needs both ranks' results.
    assert metrics[0]["bbox"]["AP"] == pytest.approx(1.0)
    assert metrics[0]["segm"]["AP"] == pytest.approx(1.0)
    assert metrics[0]["segm"]["num_matched"] == NUM_INSTANCES
    written = json.loads((tmp_path / "eval" / RESULTS_FILE).read_text())
    assert sorted({r["image_id"] for r in written}) == [1, 2]
    assert len(written) == NUM_INSTANCES
