"""The ``train`` section: every setting a run reads, declared by the component that reads it.

`TrainSettings` gathers the components' declarations (`setting` / `section` dataclasses): the run
(`RunSettings`), its length, the trainer, the default hooks, checkpointing, the strategy, the
launch, compile, EMA, batch-size LR scaling and the experiment trackers. `check_run_config`
validates a whole config once, before any process starts and before any model is built: the
``train`` section against these declarations, the rules that tie keys together, and every call
the config describes against the callable's own signature and type hints.
``tools/settings_reference.py`` writes the reference (docs/settings.md) from the same
declarations.
"""

import json
from dataclasses import dataclass, fields
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from pgtrain.config import check_calls
from pgtrain.config.schema import (
    section,
    setting,
    settings_defaults,
    settings_reference,
    validate_settings,
)
from pgtrain.engine.hooks.basic import HookSettings
from pgtrain.engine.hooks.checkpoint import CheckpointSettings
from pgtrain.engine.hooks.ema import EMASettings
from pgtrain.engine.hooks.param_group_stats import ParamGroupStatsSettings
from pgtrain.engine.hooks.standard import check_config_hooks
from pgtrain.engine.hooks.unfreeze import UnfreezeSettings
from pgtrain.engine.loop.trainer import TrainerSettings
from pgtrain.engine.processes.launch import LaunchSettings
from pgtrain.engine.run.length import RunLengthSettings, check_run_length
from pgtrain.engine.strategy.compile import CompileSettings
from pgtrain.engine.strategy.device import DEVICE_CHOICES, device_check
from pgtrain.engine.strategy.strategy import ParallelSettings, Strategy
from pgtrain.errors import ConfigError, first_line
from pgtrain.solver.lr_scaling import LRScalingSettings
from pgtrain.utils.suggest import did_you_mean
from pgtrain.utils.trackers import TrackerSettings, check_trackers

__all__ = ["TrainSettings", "check_run_config", "settings_markdown", "train_defaults"]


@dataclass
class RunSettings:
    """Where a run writes, what it starts from, where it runs and how it is seeded."""

    output_dir: str = setting("./output", "the run's folder: checkpoints, logs, config.yaml")
    overwrite: bool = setting(
        False,
        "start a new run in a folder that holds another run's checkpoints, moving them into "
        "output_dir/replaced_<time>/ first (else that is refused: continue it with --resume)",
    )
    init_checkpoint: str = setting(
        "", "weights to start from (a path or URL); the parameters it lacks are reported fresh"
    )
    init_checkpoint_exclude: list[str] = setting(
        [], "globs of init_checkpoint's keys to leave out (their parameters count as fresh)"
    )
    init_checkpoint_min_fraction: float = setting(
        0.5,
        "initial weights that provide less than this fraction of the parameters warn loudly "
        "(none at all is an error)",
        ge=0,
        le=1,
    )
    device: str = setting(
        "auto",
        "where the model runs: 'auto' (CUDA when available), 'cpu', 'cuda'",
        check=device_check,
        expects=DEVICE_CHOICES,
    )
    seed: int | None = setting(
        0, "each rank seeds with seed + rank; a negative seed draws one", null="draw one"
    )


@dataclass
class TrainSettings(  # the last base's settings come first (dataclasses' order)
    TrackerSettings,
    LaunchSettings,
    ParallelSettings,
    ParamGroupStatsSettings,
    HookSettings,
    TrainerSettings,
    RunLengthSettings,
    RunSettings,
):
    """``train``: the settings of a run (each base class is one component's declaration)."""

    checkpoint: CheckpointSettings = section(CheckpointSettings, "checkpoints")
    lr_scaling: LRScalingSettings = section(LRScalingSettings, "batch-size LR scaling")
    compile: CompileSettings = section(CompileSettings, "torch.compile")
    ema: EMASettings = section(EMASettings, "an EMA of the weights")
    unfreeze: UnfreezeSettings = section(UnfreezeSettings, "gradual unfreezing")


def train_defaults() -> dict:
    """Every ``train`` setting at its default: the ``train`` of ``configs/common/train.py``."""
    return settings_defaults(TrainSettings)


def check_run_config(cfg: DictConfig) -> None:
    """Validates a config before anything is built; writes the ``train`` values back converted
    (``"no"`` -> False, ``"1e-3"`` -> 0.001) with every default filled in.

    Raises:
        ConfigError: one line naming the key, the value and what it may be.
        RegistryError: a registry name (a builder, a schedule) that is not registered.
    """
    if cfg.get("train") is None:
        raise ConfigError("the config has no 'train' section; import it from configs.common.train")
    given = _resolved(cfg.train, "train")
    train = validate_settings(TrainSettings, given, "train")
    _check_combinations(train)
    _write_back(cfg.train, train, given)
    for key in cfg.keys():
        if key != "train" and not OmegaConf.is_interpolation(cfg, key):
            check_calls(cfg._get_node(key), str(key))
    check_config_hooks(cfg)


def _resolved(node: Any, where: str) -> Any:
    """`node`'s values with interpolations resolved; one that does not resolve is an error
    naming its key."""
    if not isinstance(node, DictConfig):
        return OmegaConf.to_container(node, resolve=True) if isinstance(node, ListConfig) else node
    values = {}
    for key in node.keys():
        try:
            value = node[key]
        except Exception as e:  # an interpolation that does not resolve
            raise ConfigError(f"{where}.{key}: {first_line(e)}") from e
        values[key] = _resolved(value, f"{where}.{key}")
    return values


def _check_combinations(train: dict[str, Any]) -> None:
    """The rules that tie settings together (each names the keys and what to change)."""
    check_run_length(train)
    Strategy.from_train(train)  # e.g. train.checkpoint.format=file cannot save an FSDP run
    if train["ema"]["enabled"] and train["strategy"] == "fsdp":
        raise ConfigError(
            "train.ema.enabled=True is not available with train.strategy=fsdp yet; use ddp, or "
            "turn train.ema.enabled off"
        )
    _check_compile_backend(train["compile"])
    check_trackers(train)  # each tracker's package is installed (the pip extra named)
    amp = train["amp"]
    if amp["enabled"] and amp["precision"] == "fp16" and train["device"] == "cpu":
        raise ConfigError(
            "train.amp.precision=fp16 needs CUDA (train.device=cpu); use train.amp.precision=bf16"
        )


def _check_compile_backend(options: dict[str, Any]) -> None:
    """A backend torch.compile knows, when something is compiled (Dynamo is imported only then:
    it takes a second or more)."""
    if not (options["model"] or options["optimizer"]):
        return
    import torch._dynamo

    known = torch._dynamo.list_backends(exclude_tags=())
    backend = options["backend"]
    if backend not in known:
        raise ConfigError(
            f"train.compile.backend: {backend!r} is not a torch.compile backend"
            f"{did_you_mean(backend, known)} (known: {', '.join(known)})"
        )


def _write_back(node: DictConfig, values: dict[str, Any], given: dict[str, Any]) -> None:
    """Puts the converted values into the config. An interpolation stays where it already gives
    the converted value; one that gives another (``${oc.env:AMP,false}`` is the string 'false')
    is replaced by the value, which is what the run reads."""
    for key, value in values.items():
        old = given.get(key)
        if key in node and OmegaConf.is_interpolation(node, key):
            if type(old) is type(value) and old == value:
                continue
            node[key] = value
        elif isinstance(value, dict) and isinstance(node.get(key), DictConfig):
            _write_back(node[key], value, old if isinstance(old, dict) else {})
        else:
            node[key] = value


def settings_markdown() -> str:
    """The settings reference (docs/settings.md): every key, its type, default and meaning."""
    lines = [
        "# Settings reference",
        "",
        "Every setting of a run's `train` section: its type, default, what it may be and what it",
        "means. Generated from the components' declarations by",
        "`python tools/settings_reference.py --write docs/settings.md`; a test keeps it current.",
        "A value outside what a key may be stops the run before anything is built, with one",
        "line naming the key, e.g. `train.clip_grad_norm: 0 must be a number > 0, or null to`",
        "`turn clipping off`. Override any key on the command line: `train.ema.enabled=true`.",
        "",
        "Values set on calls (`optimizer.lr`, `model.num_classes`, a rule's `lr_mult`) are checked",
        "against the callable's own signature and type hints (and rules against their kinds,",
        "see `pgtrain/param_groups/rules.py`) at the same moment.",
        "",
    ]
    parts = [(c, _own_rows(c)) for c in reversed(TrainSettings.__mro__[1:-1])]
    for f in fields(TrainSettings):
        if f.name not in {name for c, _ in parts for name in c.__dataclass_fields__}:
            parts.append((f.type, settings_reference(f.type, f"train.{f.name}")))
    for component, rows in parts:
        lines += [f"## {component.__name__}", "", _first_line(component), ""]
        lines += [
            f"Declared in `{component.__module__.replace('.', '/')}.py`.",
            "",
            "| key | type | default | allowed | meaning |",
            "| --- | --- | --- | --- | --- |",
        ]
        for row in rows:
            default = json.dumps(row.default).replace('"', "'")
            cells = [f"`{row.key}`", row.type, f"`{default}`", row.allowed, row.doc]
            lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
        lines.append("")
    return "\n".join(lines)


def _own_rows(component: type) -> list:
    """The reference rows of the fields `component` declares itself (not its bases')."""
    own = set(component.__dict__.get("__annotations__", {}))
    return [row for row in settings_reference(component, "train") if row.key.split(".")[1] in own]


def _first_line(component: type) -> str:
    return (component.__doc__ or "").strip().splitlines()[0]
