"""Gradual unfreezing (``train.unfreeze``): held groups compute no gradients and keep weights,
optimizer state and batch norm statistics; they enter training at their stage with a warmup; the
table and the audit are logged at the boundary; a resume inside a stage, at a boundary or past
one equals the unbroken run bit for bit; every setting is checked with a one-line error."""

import logging

import pytest
import torch
from torch import nn

from pgtrain.config import LazyConfig
from pgtrain.data import ToyClassificationDataset, build_train_loader
from pgtrain.engine import HookBase, Trainer, build_run
from pgtrain.engine.hooks import GradualUnfreezing, default_hooks
from pgtrain.engine.hooks.unfreeze import UnfreezePlan
from pgtrain.engine.run.settings import check_run_config
from pgtrain.errors import ConfigError
from pgtrain.param_groups import build_param_groups
from tests._loggers import loggers_restored
from tests._repo_configs import toy_run
from tests.engine._exact_resume_targets import train_unbroken_and_resumed
from tests.engine.test_exact_resume import assert_resume_is_exact


def stage(**kwargs) -> str:
    inner = ", ".join(f"{k}: {v}" for k, v in kwargs.items())
    return f"train.unfreeze.stages=[{{{inner}}}]"


class GradProbe(HookBase):
    """Records, after each backward, which groups have gradients and require them."""

    def __init__(self):
        self.rows = []

    def after_backward(self):
        row = {}
        for group in self.trainer.optimizer.param_groups:
            params = group["params"]
            row[group["name"]] = (
                any(p.grad is not None for p in params),
                all(p.requires_grad for p in params),
            )
        self.rows.append(row)


def test_a_held_group_computes_no_gradients_and_enters_training_with_its_warmup(tmp_path, caplog):
    cfg = toy_run(tmp_path, "train.max_iter=12", stage(groups="[default]", at=4, warmup=4))
    run = build_run(cfg, with_loader=True)
    initial = {n: p.detach().clone() for n, p in run.model.named_parameters()}
    trainer = Trainer(run.train_model, run.loader, run.optimizer, strategy=run.strategy)
    probe = GradProbe()
    lrs = []

    class LRProbe(HookBase):
        def before_step(self):
            lrs.append({g["name"]: g["lr"] for g in self.trainer.optimizer.param_groups})

    hooks = [h for h in default_hooks(run) if type(h).__name__ != "PeriodicWriter"]
    trainer.register_hooks([*hooks, probe, LRProbe()])
    with caplog.at_level(logging.INFO, logger="pgtrain"):
        trainer.train(0, 4)
        held = {n: p.detach().clone() for n, p in run.model.named_parameters()}
        # SGD's momentum buffers exist for the head only: the held group never stepped.
        stateful = {n for n, p in run.model.named_parameters() if p in run.optimizer.state}
        trainer.train(4, 12)
    # Iterations 1-4: no gradient and no requires_grad for 'default'; 'head' trains throughout.
    assert [r["default"] for r in probe.rows] == [(False, False)] * 4 + [(True, True)] * 8
    assert all(r["head"] == (True, True) for r in probe.rows)
    for name, value in held.items():
        if name.startswith("head."):
            assert not torch.equal(value, initial[name]), name
        else:
            assert torch.equal(value, initial[name]), name  # bit-identical while held
    assert stateful == {"head.weight", "head.bias"}
    assert not any(torch.equal(p, initial[n]) for n, p in run.model.named_parameters())
    # LR 0 while held, then a linear ramp from 0.001x over 4 iterations, then the schedule.
    default = [row["default"] for row in lrs]
    assert default[:4] == [0.0] * 4
    assert default[4] == pytest.approx(0.005 * 0.001)
    assert default[4] < default[5] < default[6] < default[7] < default[8] == pytest.approx(0.005)
    # The boundary is logged: the stage, the table at that iteration and the audit.
    text = caplog.text
    assert "group 'default' waits for its stage (10 tensors, 9,664 parameters" in text
    assert "stage 1 of 1 at iteration 5: group 'default' enters training" in text
    assert "Parameter groups at iteration 5:" in text and "lr at iter 5" in text
    assert (
        "Audit at iteration 5: 10 tensors (9,664 parameters) entered training; 12 tensors "
        "(9,924 parameters) train, each in exactly one group; no group waits" in text
    )


def test_the_table_and_the_lr_curves_show_the_hold(tmp_path):
    cfg = toy_run(tmp_path, "train.max_iter=20", stage(groups="['def*']", at="'0.25ep'"))
    run = build_run(cfg)
    # 2048 samples / batch 32 = 64 iterations per epoch: a quarter epoch is 16 iterations.
    assert run.unfreezing.stages[0].at == 16
    curves = run.scheduler.lr_curves()
    assert curves["default"][:16] == [0.0] * 16
    # From its stage on, the group follows the schedule (past its milestone at 15), 1/10 the head.
    assert curves["default"][16] == pytest.approx(curves["head"][16] / 10) == 0.0005
    table = run.table()
    assert "note: train.unfreeze: group 'default' trains from iteration 17 (epoch 0.25)" in table


class BNNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(16, 8), nn.BatchNorm1d(8), nn.ReLU())
        self.head = nn.Linear(8, 4)

    def forward(self, batch):
        logits = self.head(self.body(batch["features"]))
        return {"loss": nn.functional.cross_entropy(logits, batch["label"])}


@pytest.mark.parametrize("norm_eval", [True, False])
def test_batch_norm_statistics_of_a_held_group_stay_unless_told(norm_eval):
    torch.manual_seed(0)
    model = BNNet()
    groups = build_param_groups(
        model, builder="rules", lr=0.1, rules=[dict(match="head.*", group="head")]
    )
    optimizer = torch.optim.SGD(groups, lr=0.1, momentum=0.9)
    plan = UnfreezePlan.of({"stages": [{"groups": "default", "at": 3}]}, optimizer, 6, None)
    loader = build_train_loader(ToyClassificationDataset(num_samples=64), total_batch_size=8)
    trainer = Trainer(model, loader, optimizer)
    trainer.register_hooks([GradualUnfreezing(plan, groups, None, norm_eval=norm_eval)])
    bn = model.body[1]
    before = bn.running_mean.clone()
    trainer.train(0, 3)
    assert torch.equal(bn.running_mean, before) == norm_eval
    assert bn.training != norm_eval  # each step sets it again after model.train()
    trainer.train(3, 6)
    assert not torch.equal(bn.running_mean, before) and bn.training
    assert trainer.eval_modules == []


@pytest.mark.parametrize("at", [3, 5, 8], ids=["resumed-past-it", "resumed-at-it", "crossed"])
def test_resume_around_a_stage_boundary_is_bit_identical(tmp_path, at):
    # Dropout, random augmentation, 2 micro-batches, momentum; checkpoint after 5 of 12.
    with loggers_restored():
        train_unbroken_and_resumed(str(tmp_path), False, stage(groups="[default]", at=at, warmup=2))
    assert_resume_is_exact(str(tmp_path))


BAD = [
    (
        "train.unfreeze.stages=[{groups: [default]}]",
        "train.unfreeze.stages.0: the stage has no 'at'",
    ),
    (
        stage(groups="[default]", at=0),
        "train.unfreeze.stages.0.at: 0 must be a whole number of iterations >= 1",
    ),
    (stage(groups="[default]", at="'0ep'"), "train.unfreeze.stages.0.at: '0ep' must be"),
    (stage(groups="[]", at=5), "train.unfreeze.stages.0.groups: [] must be a param group name"),
    (stage(groups="[default]", at=5, warmup=-1), "train.unfreeze.stages.0.warmup: -1 must be"),
    (
        stage(groups="[default]", at=5, warmup_factor=2),
        "warmup_factor: 2 must be a number from 0 to 1",
    ),
    (
        stage(groups="[default]", at=5, wramup=2),
        "stages.0.wramup: unknown key; did you mean 'warmup'",
    ),
    ("train.unfreeze.stages=[{groups: [default], at:5}]", "a space after each colon"),
    ("train.unfreeze.stages=5", "train.unfreeze.stages: 5 must be a list of stages"),
    ("train.unfreeze.norm_eval=maybe", "train.unfreeze.norm_eval: 'maybe' must be true or false"),
]


@pytest.mark.parametrize("override, message", BAD)
def test_a_wrong_stage_is_one_line_naming_its_key(tmp_path, override, message):
    cfg = toy_run(tmp_path, override)
    with pytest.raises(ConfigError) as e:
        check_run_config(cfg)
    assert message in str(e.value) and "\n" not in str(e.value)


BAD_AT_BUILD = [
    (stage(groups="[backbone]", at=5), "stages.0.groups: 'backbone' matches no param group"),
    (stage(groups="['*']", at=5), "hold every param group, so nothing trains for the first 5"),
    (stage(groups="[default]", at=300), "stages.0.at=300 is iteration 301 and the run has 300"),
    (
        "train.unfreeze.stages=[{groups: [default], at: 5}, {groups: ['d*'], at: 9}]",
        "stages.1.groups: group 'default' is in stage 0 already",
    ),
    (
        "lr_scheduler.group_schedules={default: {_target_: pgtrain.solver.build_schedule, "
        "name: delayed_start, hold_length: 0.1}}",
        "group_schedules.default is a delayed_start and train.unfreeze holds the same group",
    ),
]


@pytest.mark.parametrize("override, message", BAD_AT_BUILD)
def test_a_stage_that_does_not_fit_the_run_is_one_line(tmp_path, override, message):
    overrides = [override]
    if "group_schedules" in override:
        overrides.append(stage(groups="[default]", at=5))
    cfg = toy_run(tmp_path, *overrides)
    check_run_config(cfg)
    with pytest.raises(ConfigError) as e:
        build_run(cfg)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_a_warmup_needs_a_scheduler_of_groups(tmp_path):
    cfg = toy_run(tmp_path, stage(groups="[default]", at=5, warmup=3))
    cfg.lr_scheduler = None
    with pytest.raises(ConfigError, match=r"stages.0.warmup needs an lr_scheduler"):
        build_run(cfg)
    cfg = toy_run(tmp_path, stage(groups="[default]", at=5))
    cfg.lr_scheduler = None
    assert build_run(cfg).unfreezing.stages[0].at == 5  # freezing alone needs no schedule


def test_a_parameter_switched_behind_the_plan_is_named(tmp_path):
    cfg = toy_run(tmp_path, "train.max_iter=8", stage(groups="[default]", at=4))
    run = build_run(cfg, with_loader=True)
    trainer = Trainer(run.train_model, run.loader, run.optimizer)

    class Meddler(HookBase):
        def after_step(self):
            if self.trainer.iter == 1:
                run.model.blocks[0]["fc"].weight.requires_grad_(True)

    trainer.register_hooks([*default_hooks(run)[:1], Meddler()])
    with pytest.raises(
        ConfigError, match=r"blocks.0.fc.weight of group 'default' requires gradients"
    ):
        trainer.train(0, 8)


def test_the_settings_reference_lists_the_unfreeze_keys():
    from pgtrain.engine.run.settings import settings_markdown

    text = settings_markdown()
    assert "`train.unfreeze.stages`" in text and "`train.unfreeze.norm_eval`" in text


def test_an_override_from_the_command_line_is_a_list_of_stages(tmp_path):
    cfg = LazyConfig.apply_overrides(
        toy_run(tmp_path), ["train.unfreeze.stages=[{groups: [default], at: '1ep', warmup: 5}]"]
    )
    check_run_config(cfg)
    run = build_run(cfg)
    assert run.unfreezing.stages[0].at == 64 and run.unfreezing.stages[0].warmup == 5


# ----- found by review -----


def test_a_resume_at_another_batch_refuses_a_stage_in_iterations(tmp_path):
    # Observed: resumed at batch 64 after 10 iterations at 32 (iteration 5 now), a stage at
    # iteration 6 held again a group that had trained for 4 iterations, and moved its start.
    from tools import train_net

    common = [
        "train.max_iter=null",
        "train.epochs=2",
        "dataloader.train.dataset.num_samples=256",
        "train.checkpoint.period=10",
    ]
    with loggers_restored():
        cfg = toy_run(tmp_path, *common, stage(groups="[default]", at=6))
        train_net.do_train(cfg, resume=False)
        (tmp_path / "last_checkpoint").write_text("model_0000010.pth")
        moved = toy_run(
            tmp_path,
            *common,
            stage(groups="[default]", at=6),
            "dataloader.train.total_batch_size=64",
        )
        with pytest.raises(ConfigError) as e:
            build_run(moved, resume=True)
        assert (
            "train.unfreeze.stages.0.at=6 counts iterations, and this run's effective batch (64) "
            "is not the checkpoint's (32)" in str(e.value)
        )
        assert "at: '0.75ep'" in str(e.value)
        # Given in epochs, the stage is the same samples at either batch: no group is held.
        moved = toy_run(
            tmp_path,
            *common,
            stage(groups="[default]", at="'0.75ep'"),
            "dataloader.train.total_batch_size=64",
        )
        run = build_run(moved, resume=True)
        assert run.iterations_done == 5 and run.unfreezing.stages[0].at == 3
        assert run.unfreezing.waiting(run.iterations_done) == []


def fake_optimizer(*names):
    return torch.optim.SGD(
        [{"params": [nn.Parameter(torch.zeros(1))], "name": n} for n in names], lr=0.1
    )


def test_a_group_name_means_its_weight_decay_halves_and_not_a_longer_layer():
    # Observed: the glob 'layer_1*' also held layer_10, layer_11 (and the final norm, layer_12)
    # of a 12-block ViT. A name means the group or its weight-decay halves.
    optimizer = fake_optimizer(
        "layer_1[wd=0]", "layer_1[wd=0.05]", "layer_10[wd=0]", "layer_11", "head"
    )
    stages = {"stages": [{"groups": ["layer_1"], "at": 2, "warmup": 1}]}
    plan = UnfreezePlan.of(stages, optimizer, 10, None)
    assert plan.stages[0].groups == ("layer_1[wd=0]", "layer_1[wd=0.05]")
    assert (
        "groups 'layer_1[wd=0]', 'layer_1[wd=0.05]' train from iteration 3, their LR"
        in (plan.describe()[0])
    )
    exact = {"stages": [{"groups": ["layer_1[wd=0]"], "at": 2}]}
    assert UnfreezePlan.of(exact, optimizer, 10, None).stages[0].groups == ("layer_1[wd=0]",)
    glob = {"stages": [{"groups": ["layer_1*"], "at": 2}]}
    assert len(UnfreezePlan.of(glob, optimizer, 10, None).stages[0].groups) == 4  # as globs do


def test_a_schedule_free_optimizer_is_refused():
    # Observed: its per-group step count ran on while the group was held, so the group skipped
    # the optimizer's own warmup and got oversized first updates.
    schedulefree = pytest.importorskip("schedulefree")
    optimizer = schedulefree.AdamWScheduleFree(
        [{"params": [nn.Parameter(torch.zeros(1))], "name": n} for n in ("default", "head")]
    )
    with pytest.raises(ConfigError, match=r"AdamWScheduleFree keeps a step count per group"):
        UnfreezePlan.of({"stages": [{"groups": "default", "at": 2}]}, optimizer, 10, None)


def test_batch_norm_without_affine_parameters_in_a_held_part_stays_too():
    # Observed: a BatchNorm1d(affine=False) inside the held part kept updating its statistics.
    torch.manual_seed(0)
    model = BNNet()
    model.body.append(nn.BatchNorm1d(8, affine=False))
    groups = build_param_groups(
        model, builder="rules", lr=0.1, rules=[dict(match="head.*", group="head")]
    )
    optimizer = torch.optim.SGD(groups, lr=0.1)
    plan = UnfreezePlan.of({"stages": [{"groups": "default", "at": 3}]}, optimizer, 6, None)
    loader = build_train_loader(ToyClassificationDataset(num_samples=64), total_batch_size=8)
    trainer = Trainer(model, loader, optimizer)
    trainer.register_hooks([GradualUnfreezing(plan, groups, None)])
    trainer.train(0, 3)
    assert int(model.body[3].num_batches_tracked) == 0 == int(model.body[1].num_batches_tracked)
    trainer.train(3, 6)
    assert int(model.body[3].num_batches_tracked) == 3


def test_without_a_schedule_the_notes_do_not_claim_lr_0(tmp_path):
    cfg = toy_run(tmp_path, stage(groups="[default]", at=5))
    cfg.lr_scheduler = None
    line = build_run(cfg).table().splitlines()[-1]
    assert line.endswith("trains from iteration 6; before that no gradients")


def test_the_diff_and_the_lr_finder_say_what_the_stages_hold(tmp_path, capsys):
    from tools import diff_param_groups, lr_find

    staged = f'configs/quick/toy.py "{stage(groups="[default]", at=5, warmup=2)}"'
    with loggers_restored():
        assert diff_param_groups.main(["configs/quick/toy.py", staged]) == 1
        out = capsys.readouterr().out
        assert (
            "differ: gradual unfreezing (held: no gradients, LR 0): none -> group 'default' "
            "until iteration 6 (warmup 2)" in out
        )
        lines = lr_find.main(
            [
                "--config",
                "configs/quick/toy.py",
                "--iters",
                "5",
                "--output-dir",
                str(tmp_path / "lr"),
                stage(groups="[default]", at=5),
            ]
        )
    assert "note: train.unfreeze holds group 'default' until iteration 6; the sweep" in "\n".join(
        lines
    )
