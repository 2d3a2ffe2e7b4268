"""Schedule-free AdamW (the `schedulefree` package): the trainer trains in train mode, evaluates
and saves in eval mode (the averaged weights), keeps the param groups' multipliers, and a resume
continues where it stopped (its per-group running values restored with the state)."""

import pytest
import torch

from tests._repo_configs import toy_run, whole_and_resumed

schedulefree = pytest.importorskip("schedulefree")


SCHEDULE_FREE = (
    "optimizer._target_=schedulefree.AdamWScheduleFree",
    "~optimizer.momentum",
    "optimizer.lr=0.01",
    "+optimizer.warmup_steps=5",
)


def test_evaluation_and_saves_see_the_averaged_weights(tmp_path, monkeypatch):
    from tools import train_net

    seen = []

    def spy(cfg, model, *rest):  # what evaluation sees: the optimizer's mode and the weights
        seen.append((run_optimizer[0].param_groups[0]["train_mode"], model.head.weight.clone()))
        return {}

    run_optimizer = []
    original = train_net.build_run

    def build_run(*args, **kwargs):
        run = original(*args, **kwargs)
        run_optimizer.append(run.optimizer)
        return run

    monkeypatch.setattr(train_net, "evaluate", spy)
    monkeypatch.setattr(train_net, "build_run", build_run)
    torch.manual_seed(0)
    train_net.do_train(toy_run(tmp_path, *SCHEDULE_FREE, "train.max_iter=20"), resume=False)
    optimizer = run_optimizer[0]
    assert [mode for mode, _ in seen] == [False, False]  # eval mode at iterations 10 and 20
    saved = torch.load(tmp_path / "model_final.pth", weights_only=True)
    assert optimizer.param_groups[0]["train_mode"]  # back in train mode after the last save
    optimizer.eval()  # (train -> eval rounds in float: equal to the last bits or so)
    head = next(p for g in optimizer.param_groups for p in g["params"] if p.shape == (4, 64))
    torch.testing.assert_close(saved["model"]["head.weight"], head.detach(), rtol=0, atol=1e-6)
    torch.testing.assert_close(seen[-1][1], head.detach(), rtol=0, atol=1e-6)
    optimizer.train()
    assert (head - saved["model"]["head.weight"]).abs().max() > 1e-4  # train point: elsewhere
    # The head's 10x multiplier reached the optimizer as for any other.
    lrs = {g["name"]: g["lr"] for g in optimizer.param_groups}
    assert lrs["head"] == pytest.approx(10 * lrs["default"])


def test_a_resume_continues_where_it_stopped(tmp_path):
    from tools import train_net

    whole, halves = whole_and_resumed(train_net, tmp_path, *SCHEDULE_FREE)
    # The saved point is the average; a resume re-derives the training point from it, which
    # rounds differently from the unbroken run's: equal within float error, not bit for bit.
    for key, value in whole["model"].items():
        torch.testing.assert_close(halves["model"][key], value, rtol=1e-5, atol=1e-6, msg=key)
    groups = halves["trainer"]["optimizer"]["group_hparams"]
    assert groups["default"]["k"] == 20  # schedule-free's step count continued
