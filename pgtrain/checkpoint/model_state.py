"""Fitting a checkpoint's model state into a model, and the report of what fit."""

import fnmatch
import logging
import re
from collections import defaultdict
from collections.abc import Mapping, Sequence
from itertools import chain
from typing import Any

import torch
from torch import nn

from pgtrain.checkpoint.report import CheckpointReport
from pgtrain.errors import CheckpointError, ConfigError
from pgtrain.utils.suggest import close_matches, listing

__all__ = [
    "check_exact_fit",
    "check_loadable_finite",
    "load_model_state",
    "pretrained_parameter_names",
    "split_checkpoint",
]

logger = logging.getLogger("pgtrain.checkpoint")

_MAX_LOGGED = 10


def load_model_state(
    model: nn.Module, state: Mapping[str, Any], path: str, exclude: Sequence[str] = ()
) -> CheckpointReport:
    """Loads the entries of `state` that fit into `model`; reports the ones that did not.

    Entries whose shape differs from the model's are skipped with a warning, so the model keeps
    its initialization there (new heads with another number of classes). Entries matching a glob
    of `exclude` (``fnmatch``, ``*`` crossing dots) are left out on purpose: their parameters
    start from their initialization and count as fresh, and the report lists them.

    Raises:
        CheckpointError: The model rejected the weights (e.g. a module's own loading check).
        ConfigError: A glob of `exclude` matches no key of the file, or covers one name of a
            tied tensor that another name would load.
    """
    model_state = model.state_dict()
    state = _fit_resizable(model, _strip_module_prefix(state, model_state), model_state)
    state, excluded = _exclude(state, exclude, path)
    usable, mismatched = _drop_mismatched(state, model_state, path)
    aliases = _aliases(model)
    _check_tied_exclusion(exclude, usable, aliases)
    try:
        result = model.load_state_dict(usable, strict=False)
    except RuntimeError as e:
        raise CheckpointError(f"Could not load model weights from {path}: {e}") from e
    skipped = {key for key, _, _ in mismatched}
    # What the model itself says it did not get: load_state_dict's missing keys account for
    # modules that rename old keys while loading (torchvision's older detector checkpoints), so
    # the keys loaded are the model's others, renamed ones included.
    not_provided = set(result.missing_keys) | skipped
    loaded = [key for key in model_state if key not in not_provided]
    left_out = skipped | set(excluded) | _left_out_with_ties(excluded, aliases)
    missing = [
        key
        for key in result.missing_keys
        if key not in left_out and aliases.get(key, {key}) <= not_provided
    ]
    fresh = [n for n, _ in model.named_parameters() if aliases[n] <= not_provided]
    _warn_keys("Model keys missing in checkpoint %s (%d): %s", path, missing)
    _warn_keys("Checkpoint %s keys not in the model (%d): %s", path, result.unexpected_keys)
    return CheckpointReport(
        path=path,
        loaded=loaded,
        missing=missing,
        unexpected=list(result.unexpected_keys),
        shape_mismatched=mismatched,
        excluded=excluded,
        fresh=fresh,
    )


def _exclude(
    state: dict[str, Any], patterns: Sequence[str], path: str
) -> tuple[dict[str, Any], list[str]]:
    """Splits off the keys matching any glob of `patterns`; each glob must match a key."""
    if not patterns:
        return state, []
    if isinstance(patterns, str):
        patterns = [patterns]
    matchers = [(p, re.compile(fnmatch.translate(p)).match) for p in patterns]
    for pattern, match in matchers:
        if not any(match(key) for key in state):
            near = ", ".join(f"'{k}'" for k in close_matches(pattern.replace("*", ""), state, n=3))
            raise ConfigError(
                f"init_checkpoint_exclude: '{pattern}' matches no key of {path} (closest: "
                f"{near or 'none'}); a glob covers whole names, e.g. 'head.*' or "
                "'roi_heads.box_predictor.*'"
            )
    excluded = [key for key in state if any(match(key) for _, match in matchers)]
    logger.info("Left out %d keys of %s (init_checkpoint_exclude)", len(excluded), path)
    dropped = set(excluded)
    return {k: v for k, v in state.items() if k not in dropped}, excluded


def _check_tied_exclusion(
    patterns: Sequence[str], usable: Mapping[str, Any], aliases: Mapping[str, set[str]]
) -> None:
    """Refuses globs that cover one name of a tied tensor while another name loads it.

    A tied tensor (``head.weight = embed.weight``) loads or starts fresh as a whole: leaving
    out one name while the file provides the other would load it anyway, and the report would
    call it left out. Neither choice can be guessed, so the user names it.

    Raises:
        ConfigError: Naming the covered name, the name that loads it, and what to write.
    """
    if not patterns:
        return
    if isinstance(patterns, str):
        patterns = [patterns]
    for name, names in aliases.items():
        loaders = sorted(n for n in names if n in usable)
        if len(names) < 2 or not loaders:
            continue
        covering = [p for p in patterns if fnmatch.fnmatchcase(name, p)]
        if covering:  # `name` is left out (or absent) and `loaders[0]` would load the tensor
            pattern, loader = covering[0], loaders[0]
            raise ConfigError(
                f"init_checkpoint_exclude: '{pattern}' covers '{name}' but not '{loader}', the "
                "same tensor (tied weights), which the checkpoint provides; a tied tensor loads "
                f"or starts fresh as a whole: add '{loader}' to train.init_checkpoint_exclude "
                f"to start it fresh, or write globs that do not cover '{name}' to load it"
            )


def _left_out_with_ties(excluded: Sequence[str], aliases: Mapping[str, set[str]]) -> set[str]:
    """The other names of excluded tied tensors: left out with them (`_check_tied_exclusion`
    made sure no name loaded the shared tensor), so they are fresh, not missing."""
    names: set[str] = set()
    for key in excluded:
        tied = sorted(aliases.get(key, {key}) - set(excluded))
        if tied:
            logger.warning(
                "Left out '%s' (tied: %s): the shared tensor is fresh", key, ", ".join(tied)
            )
        names.update(tied)
    return names


def pretrained_parameter_names(model: nn.Module) -> set[str]:
    """Returns the parameters that modules loaded from pretrained weights when they were built.

    A module that loads pretrained weights in its constructor (e.g. an ImageNet backbone) lists
    them, relative to itself, in a ``pretrained_parameter_names`` attribute; the rest of the
    model (a new FPN, new heads) is then "fresh" for a run without an initial checkpoint.
    """
    names: set[str] = set()
    for prefix, module in model.named_modules():
        own = getattr(module, "pretrained_parameter_names", None)
        if own:
            names.update(f"{prefix}.{n}" if prefix else n for n in own)
    return names


def split_checkpoint(data: Any, path: str) -> tuple[Mapping[str, Any], dict[str, Any]]:
    """Splits a loaded file into model state and the rest; a bare state_dict has no rest."""
    if not isinstance(data, Mapping):
        raise CheckpointError(
            f"Checkpoint {path} holds a {type(data).__name__}, not a dict of weights; save "
            "model.state_dict() or use a pgtrain checkpoint"
        )
    if isinstance(data.get("model"), Mapping):
        return data["model"], {k: v for k, v in data.items() if k != "model"}
    if data and all(isinstance(v, torch.Tensor) for v in data.values()):
        return data, {}
    keys = listing(data, _MAX_LOGGED)
    raise CheckpointError(
        f"Checkpoint {path} has no 'model' entry and is not a state_dict of tensors (top-level "
        f"keys: {keys}); save the model's state_dict() into a file of its own"
    )


def check_exact_fit(model: nn.Module, state: Mapping[str, Any], path: str) -> None:
    """Refuses a resume whose checkpoint does not hold exactly the model's keys and shapes.

    Raises:
        CheckpointError: Listing the keys whose shapes differ, that are missing, or unexpected.
    """
    model_state = model.state_dict()
    state = _strip_module_prefix(state, model_state)
    differ = [
        f"{k} {tuple(v.shape)} in file vs {tuple(model_state[k].shape)}"
        for k, v in state.items()
        if k in model_state and _shapes_differ(v, model_state[k])
    ]
    missing = [k for k in model_state if k not in state]
    unexpected = [k for k in state if k not in model_state]
    if not (differ or missing or unexpected):
        return
    parts = [
        f"{label} ({len(keys)}): {listing(keys, 4)}"
        for label, keys in (
            ("shape differs", differ),
            ("missing in file", missing),
            ("not in model", unexpected),
        )
        if keys
    ]
    raise CheckpointError(
        f"--resume: {path} does not fit the model ({'; '.join(parts)}); resume with the config "
        "the run was trained with, or start a new run from these weights with "
        "train.init_checkpoint and another train.output_dir"
    )


def check_loadable_finite(state: Mapping[str, Any], path: str) -> None:
    """Refuses a checkpoint whose floating-point weights hold NaN or Inf.

    Raises:
        CheckpointError: Naming the first such tensor.
    """
    for key, value in state.items():
        if isinstance(value, torch.Tensor) and value.is_floating_point():
            if not bool(torch.isfinite(value).all()):
                raise CheckpointError(
                    f"Checkpoint {path} is damaged: '{key}' holds NaN/Inf values; use an "
                    "earlier checkpoint of the run"
                )


def _fit_resizable(
    model: nn.Module, state: Mapping[str, Any], model_state: Mapping[str, Any]
) -> Mapping[str, Any]:
    """Resizes entries that a module knows how to fit (a ViT's pos_embed from another grid).

    A module offering ``fit_pos_embed(value)`` gets its ``pos_embed`` resized before the shape
    check, instead of having it skipped as mismatched.
    """
    fixed = None
    for prefix, module in model.named_modules():
        key = f"{prefix}.pos_embed" if prefix else "pos_embed"
        fit = getattr(module, "fit_pos_embed", None)
        value, target = state.get(key), model_state.get(key)
        if fit is None or not _shapes_differ(value, target):
            continue
        fixed = dict(state) if fixed is None else fixed
        fixed[key] = fit(value)
        logger.info("Resized '%s' from %s to %s", key, tuple(value.shape), tuple(target.shape))
    return state if fixed is None else fixed


def _drop_mismatched(
    state: Mapping[str, Any], model_state: Mapping[str, Any], path: str
) -> tuple[dict[str, Any], list[tuple[str, tuple, tuple]]]:
    """Splits `state` into entries that fit the model and (key, file shape, model shape)."""
    usable: dict[str, Any] = {}
    mismatched: list[tuple[str, tuple, tuple]] = []
    for key, value in state.items():
        target = model_state.get(key)
        if not _shapes_differ(value, target):
            usable[key] = value
            continue
        mismatched.append((key, tuple(value.shape), tuple(target.shape)))
        logger.warning(
            "Skipped '%s' from %s: shape %s in the checkpoint but %s in the model; it keeps its "
            "initialization",
            key,
            path,
            tuple(value.shape),
            tuple(target.shape),
        )
    return usable, mismatched


def _strip_module_prefix(state: Mapping[str, Any], model_state: Mapping[str, Any]) -> Mapping:
    """Removes the ``module.`` prefix of files saved from a DDP-wrapped model."""
    prefix = "module."
    if not state or not all(k.startswith(prefix) for k in state):
        return state
    if any(k.startswith(prefix) for k in model_state):
        return state
    return {k[len(prefix) :]: v for k, v in state.items()}


def _shapes_differ(value: Any, target: Any) -> bool:
    """Returns whether a file tensor cannot be copied into a model tensor of another shape."""
    if not isinstance(value, torch.Tensor) or not isinstance(target, torch.Tensor):
        return False
    if nn.parameter.is_lazy(target):  # lazy modules take their shape from the file
        return False
    return tuple(value.shape) != tuple(target.shape)


def _aliases(model: nn.Module) -> dict[str, set[str]]:
    """Maps each parameter/buffer name to all names of the same tensor (tied weights)."""
    by_tensor: dict[int, set[str]] = defaultdict(set)
    named = chain(
        model.named_parameters(remove_duplicate=False), model.named_buffers(remove_duplicate=False)
    )
    for name, tensor in named:
        by_tensor[id(tensor)].add(name)
    return {name: names for names in by_tensor.values() for name in names}


def _warn_keys(message: str, path: str, keys: list[str]) -> None:
    """Logs a warning with the first few `keys`."""
    if keys:
        logger.warning(message, path, len(keys), listing(keys, _MAX_LOGGED))
