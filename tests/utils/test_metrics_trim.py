"""metrics.json after a resume: each sample's lines once, whatever the batch of the resumed run."""

import json

from pgtrain.utils.events import EventStorage
from pgtrain.utils.writers import JSONWriter


def _write(path, iterations, batch, per_epoch=None):
    writer = JSONWriter(str(path), iters_per_epoch=per_epoch, batch=batch)
    writer.start(iterations[0])
    storage = EventStorage(iterations[0])
    if True:
        for it in iterations:
            storage.iter = it
            storage.put_scalar("loss", float(it))
            writer.write(storage)
    writer.close()


def _stamps(path):
    return [(r["iteration"], r.get("samples")) for r in map(json.loads, open(path))]


def test_a_resume_at_a_larger_batch_keeps_the_samples_before_it(tmp_path):
    path = tmp_path / "metrics.json"
    _write(path, range(10), batch=32)  # 320 samples; the checkpoint after iteration 5 (192)
    _write(path, range(3, 6), batch=64)  # resumed at iteration 3 of batch 64 = sample 192
    # "iteration": iterations done (the console's count)
    assert _stamps(path) == [(i, i * 32) for i in range(1, 7)] + [(4, 256), (5, 320), (6, 384)]


def test_a_resume_at_the_same_batch_keeps_the_iterations_before_it(tmp_path):
    path = tmp_path / "metrics.json"
    _write(path, range(40), batch=8, per_epoch=40)
    # The dataset grew (another epoch length): the iterations before the resume all stay.
    _write(path, range(24, 26), batch=8, per_epoch=80)
    assert [it for it, _ in _stamps(path)] == [*range(1, 25), 25, 26]
