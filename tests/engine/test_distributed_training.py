import torch

from pgtrain.engine import launch
from pgtrain.modeling import MLPClassifier
from tests.engine._train_targets import train_toy


def test_two_gloo_processes_match_one_process_with_the_same_global_batch(tmp_path, monkeypatch):
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(var, raising=False)
    one, two = tmp_path / "one.pt", tmp_path / "two.pt"
    train_toy(str(one))
    launch(train_toy, 2, args=(str(two),), backend="gloo")
    a, b = torch.load(one, weights_only=True), torch.load(two, weights_only=True)
    for name, value in a["model"].items():
        torch.testing.assert_close(b["model"][name], value, rtol=0, atol=1e-6, msg=name)
    # The logged losses are the mean over both ranks, equal to the single-process ones.
    torch.testing.assert_close(b["losses"], a["losses"], rtol=0, atol=1e-6)
    # ...and training did move the weights (the equality above is not that of two idle models).
    torch.manual_seed(0)
    initial = MLPClassifier(in_dim=8, hidden_dim=16, depth=2, num_classes=3).state_dict()
    assert not torch.allclose(a["model"]["head.weight"], initial["head.weight"])


def test_accumulation_syncs_gradients_once_per_step_under_ddp(tmp_path, monkeypatch):
    # DDP all-reduces gradients in every backward unless told not to (no_sync): with 4
    # micro-batches per step the trainer must sync on the last one only.
    import json

    from tests.engine._train_targets import count_gradient_syncs

    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(var, raising=False)
    out = tmp_path / "syncs.json"
    launch(count_gradient_syncs, 2, args=(str(out), [1, 4], 3), backend="gloo")
    counts = json.loads(out.read_text())
    assert counts["1"] >= 3  # a bucket or more per step
    assert counts["4"] == counts["1"]  # not 4x: the micro-steps did not sync
