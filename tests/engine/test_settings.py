"""Every setting typed and checked in one place: the schema, its walk through train_net, and the
reference generated from it."""

import os
import typing

import pytest
from omegaconf import OmegaConf

from pgtrain.config import LazyConfig
from pgtrain.config.schema import settings_reference
from pgtrain.engine import TrainSettings, check_run_config, settings_markdown, train_defaults
from pgtrain.errors import ConfigError, PgtrainError
from tests._cli_batch import ROOT, run_batch

TOY = "configs/quick/toy.py"
ROWS = settings_reference(TrainSettings, "train")


def toy(*overrides):
    return LazyConfig.apply_overrides(LazyConfig.load(os.path.join(ROOT, TOY)), list(overrides))


def _plain_type(row):
    tp = row.field.type
    args = typing.get_args(tp)
    if type(None) in args:
        tp = next(a for a in args if a is not type(None)) if len(args) == 2 else tp
    return tp


def wrong_type_value(row):
    """A value of the wrong type for the setting, as a user would type it."""
    tp = _plain_type(row)
    if tp is bool:
        return "maybe"
    if tp in (int, float) or typing.get_origin(tp) is typing.Union:
        return "[1, 2]" if row.field.metadata.get("check") else "abc"
    if typing.get_origin(tp) is list:
        return "{a: 1}"
    if typing.get_origin(tp) is typing.Literal:
        return "[1]"
    return "{a: 1}"  # a string setting: a mapping is no string


def out_of_range_value(row):
    """A value of the right type outside what the setting allows, or None where it has no range."""
    tp = _plain_type(row)
    if typing.get_origin(tp) is typing.Literal:
        return "nonsense"
    bounds = row.field.metadata.get("bounds", {})
    if "ge" in bounds:
        low = bounds["ge"] - 1
        return str(int(low) if tp is int else low)
    if "gt" in bounds:
        return str(int(bounds["gt"]) if tp is int else float(bounds["gt"]))
    if "le" in bounds:
        return str(bounds["le"] + 1)
    if "lt" in bounds:
        return str(bounds["lt"])
    if row.field.metadata.get("check"):
        return "-5" if tp is not str else "gpu"
    return None


def walk_cases():
    cases = []
    for row in ROWS:
        cases.append((row.key, "wrong type", wrong_type_value(row)))
        bad = out_of_range_value(row)
        if bad is not None:
            cases.append((row.key, "out of range", bad))
    return cases


CASES = walk_cases()


def test_every_declared_key_has_a_default_in_the_shared_train_section():
    defaults = train_defaults()
    for row in ROWS:
        node = defaults
        for part in row.key.split(".")[1:]:
            node = node[part]
        assert node == row.default, row.key
    assert len(ROWS) >= 45


@pytest.mark.slow
def test_the_walk_every_bad_value_is_one_line_naming_the_key_before_anything_starts(tmp_path):
    argvs = [
        ["--config", TOY, f"train.output_dir={tmp_path / 'never'}", f"{key}={value}"]
        for key, _, value in CASES
    ]
    results = run_batch("tools/train_net.py", argvs, tmp_path)
    covered = set()
    for (key, kind, value), res in zip(CASES, results, strict=True):
        lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
        assert res.returncode == 2, (key, kind, value, res.stderr[-2000:])
        # One line and nothing before it: no process started, no model built, no log written.
        assert len(lines) == 1 and lines[0].startswith(f"error: {key}: "), (key, value, lines)
        assert " must be " in lines[0], lines[0]
        covered.add(key)
    assert covered == {row.key for row in ROWS}
    assert not os.path.exists(tmp_path / "never")


@pytest.mark.parametrize(
    "override, message",
    [
        # Observed: 0 zeroed every gradient, -1 flipped it (ascent); both trained with exit 0.
        (
            "train.clip_grad_norm=0",
            "train.clip_grad_norm: 0 must be a number > 0, or null to turn clipping off",
        ),
        ("train.clip_grad_norm=-1", "train.clip_grad_norm: -1 must be a number > 0"),
        # Observed: a traceback.
        ("train.accumulation=2.0", "train.accumulation: 2.0 must be a whole number >= 1"),
        # Observed: accepted, and then no evaluation ran at all.
        (
            "train.ema.evaluate=EMA",
            "train.ema.evaluate: 'EMA' must be one of 'model', 'ema', 'both'; did you mean 'ema'?",
        ),
        ("train.ema.buffers=avg", "train.ema.buffers: 'avg' must be one of 'average', 'copy'"),
        ("train.unused_params=warning", "train.unused_params: 'warning' must be one of 'warn'"),
        ("train.amp.enabled=maybe", "train.amp.enabled: 'maybe' must be true or false"),
        (
            "train.checkpoint.keep_last=0",
            "train.checkpoint.keep_last: 0 must be a whole number >= 1, or null to keep all",
        ),
        ("train.ema.decay=1", "train.ema.decay: 1 must be a number >= 0 and < 1"),
        ("train.fsdp.param_dtype=float16", "train.fsdp.param_dtype: 'float16' must be one of"),
        ("+train.ema.evalute=ema", "train.ema.evalute: unknown setting; did you mean 'evaluate'"),
        # 0 epochs would mean every iteration, where 0 means "at the end only".
        (
            "train.eval_period=0ep",
            "train.eval_period: '0ep' must be a whole number of iterations >= 0, or epochs > 0",
        ),
        ("train.iters_per_epoch=10", "train.iters_per_epoch: 10 must be null: the run sets it"),
        ("train.amp.enabled=2", "train.amp.enabled: 2 must be true or false"),
        ("train.device=cuda:01", "train.device: 'cuda:01' must be one of 'auto', 'cpu', 'cuda'"),
        ("train.ema.device=gpu", "train.ema.device: 'gpu' must be 'cpu', 'cuda' or 'cuda:N'"),
        ("+train.myproject_key=3", "train.myproject_key: unknown setting"),
        ("train.log_period=${train.nope}", "train.log_period: Interpolation key 'train.nope'"),
    ],
)
def test_values_that_trained_wrong_are_refused_naming_the_key(override, message):
    with pytest.raises(ConfigError) as e:
        check_run_config(toy(override))
    assert str(e.value).startswith(message), str(e.value)


@pytest.mark.parametrize(
    "word, value",
    [("no", False), ("off", False), ("false", False), ("0", False), ("yes", True), ("on", True)],
)
def test_boolean_keys_take_the_words_people_type_and_store_the_bool(word, value):
    # Observed: "no" was a non-empty string, so train.ema.enabled=no turned EMA on.
    cfg = toy(f"train.ema.enabled={word}", f"train.compile.model={word}")
    check_run_config(cfg)
    assert cfg.train.ema.enabled is value and cfg.train.compile.model is value


def test_a_device_with_an_index_is_a_device():
    for device in ("cpu:0", "cuda:1", "cuda"):
        check_run_config(toy(f"train.device={device}"))


def test_a_compile_backend_torch_does_not_know_is_refused_when_compiling():
    check_run_config(toy("train.compile.backend=eagr"))  # nothing compiled: not looked up
    with pytest.raises(
        ConfigError,
        match="train.compile.backend: 'eagr' is not a torch.compile backend; did you mean 'eager'",
    ):
        check_run_config(toy("train.compile.model=true", "train.compile.backend=eagr"))


def test_an_interpolation_that_gives_another_type_is_replaced_by_the_converted_value(monkeypatch):
    # Observed: ${oc.env:AMP,false} passed the check as False, and the run read the string
    # 'false' (truthy): AMP on.
    monkeypatch.setenv("PGTRAIN_TEST_FLAG", "no")
    cfg = toy(
        "train.amp.enabled=${oc.env:PGTRAIN_TEST_FLAG,false}", "train.log_period=${oc.env:X,5}"
    )
    check_run_config(cfg)
    assert cfg.train.amp.enabled is False and cfg.train.log_period == 5


def test_checked_values_are_written_back_converted_with_every_default_filled_in():
    cfg = toy("train.clip_grad_norm=1", "~train.ema", "train.log_period=${train.eval_period}")
    check_run_config(cfg)
    assert cfg.train.clip_grad_norm == 1.0 and isinstance(cfg.train.clip_grad_norm, float)
    assert cfg.train.ema.decay == 0.9998  # removed above, filled back at its default
    assert OmegaConf.is_interpolation(cfg.train, "log_period")  # kept as written, checked: 100


@pytest.mark.parametrize(
    "override, message",
    [
        # A string never reaches the optimizer: the callable's own type hints say what fits.
        ("optimizer.lr=fast", "optimizer.lr: 'fast' must be a number or a Tensor"),
        ("optimizer.momentum=[0.9]", "optimizer.momentum: [0.9] must be a number"),
        ("model.hidden_dim=64.5", "model.hidden_dim: 64.5 must be a whole number"),
        # A rule's setting is checked by its kind's declaration, before any model exists.
        (
            "optimizer.params.rules=[{match: head.*, lr_mult: fast}]",
            "optimizer.params.rules[0].lr_mult must be a non-negative number, got 'fast'",
        ),
        (
            "optimizer.params.rules=[{match: head.*, lr_mul: 10}]",
            "optimizer.params.rules[0]: unknown key 'lr_mul'; did you mean 'lr_mult'",
        ),
        # A builder's options are checked against the builder the name chooses.
        (
            "+optimizer.params.decay=0.75",
            "optimizer.params: unexpected keyword 'decay' for builder 'rules'",
        ),
        ("optimizer.params.builder=rulez", "optimizer.params: No 'rulez' in PARAM_GROUP_BUILDERS"),
        ("+optimizer.betas=[0.9]", "optimizer: unexpected keyword 'betas'"),
        ("optimizer.lr=${train.nope}", "optimizer.lr: Interpolation key 'train.nope'"),
        (
            "optimizer._target_=torch.optim.AdamWW",
            "optimizer._target_: cannot import 'torch.optim.AdamWW'",
        ),
        (
            "optimizer.params.rules=[{module: torch.nn.Linaer, lr_mult: 2}]",
            "optimizer.params.rules[0].module: cannot import 'torch.nn.Linaer'",
        ),
    ],
)
def test_values_of_calls_are_checked_against_the_callable_before_it_is_built(override, message):
    with pytest.raises(PgtrainError) as e:  # a ConfigError, or a RegistryError for a name
        check_run_config(toy(override))
    assert str(e.value).startswith(message), str(e.value)


def test_a_tuple_option_takes_a_list_of_the_right_length():
    adamw = ("optimizer._target_=torch.optim.AdamW", "~optimizer.momentum")
    cfg = toy(*adamw, "+optimizer.betas=[0.9, 0.99]")
    check_run_config(cfg)  # YAML has no tuples: a list of two numbers fits tuple[float, float]
    cfg = toy(*adamw, "+optimizer.betas=[0.9]")
    with pytest.raises(ConfigError, match=r"optimizer.betas: \[0.9\] must be a list of 2 values"):
        check_run_config(cfg)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (
            ["train.strategy=fsdp", "train.ema.enabled=true"],
            "train.ema.enabled=True is not available with train.strategy=fsdp",
        ),
        (
            ["train.strategy=fsdp", "train.checkpoint.format=file"],
            "train.checkpoint.format=file cannot save an FSDP run",
        ),
        (
            ["train.amp.enabled=true", "train.amp.precision=fp16"],
            "train.amp.precision=fp16 needs CUDA",
        ),
    ],
)
def test_rules_that_tie_keys_together_are_checked_in_the_same_pass(overrides, message):
    with pytest.raises(ConfigError, match=message):
        check_run_config(toy(*overrides))


def test_the_settings_reference_is_current():
    with open(os.path.join(ROOT, "docs", "settings.md")) as f:
        assert f.read() == settings_markdown() + "\n", (
            "docs/settings.md is stale: python tools/settings_reference.py --write docs/settings.md"
        )
    for row in ROWS:
        assert f"`{row.key}`" in settings_markdown()


def test_one_gpu_index_for_several_processes_is_refused(monkeypatch):
    from pgtrain.engine import resolve_device
    from pgtrain.utils import comm

    monkeypatch.setattr(comm, "get_world_size", lambda: 2)
    monkeypatch.setattr("torch.cuda.is_available", lambda: True)
    with pytest.raises(PgtrainError, match="train.device=cuda:1 would put all 2 processes on one"):
        resolve_device("cuda:1")
