"""timm models as backbones: ``timm`` for `ImageClassifier`, ``timm_fpn`` for `MaskRCNN`.

Both BACKBONES entries build any model of timm (``pip install 'pgtrain[timm]'``) by its name in
``timm.list_models()``, never download anything, and pass their other keyword arguments to
``timm.create_model`` (``drop_path_rate=0.1``, ``img_size=32``, ...):

- ``timm``: the model with ``num_classes=0``, so it returns pooled B x D features; the classifier
  (`ImageClassifier`) adds the head for ``model.num_classes``. The model is the backbone itself,
  so its parameter names are timm's under ``backbone.`` and its own ``group_matcher()`` and
  ``no_weight_decay()`` are what the ``layer_decay`` builder reads: the groups equal
  ``timm.optim.param_groups_layer_decay`` for the same model with its head.
- ``timm_fpn``: timm's feature extraction (``features_only=True``) as ``body`` and torchvision's
  FeaturePyramidNetwork as ``fpn`` (`TimmFPNBackbone`), with the ``out_channels``,
  ``featmap_names`` and ``num_levels`` that `MaskRCNN` reads.

Pretrained weights come from a local file in timm's format (``.pth``, ``.safetensors``; a
state_dict, or a checkpoint holding one under ``state_dict`` / ``model``), loaded by timm's own
loader (``pretrained_cfg_overlay=dict(file=...)``), which drops a classifier that does not fit and
resizes a ViT's position embedding to the model's ``img_size``. The loaded parameters are then
recorded as pretrained (``pretrained_parameter_names``), so that without an initial checkpoint
the rest (the classifier's head, the FPN, the detector's heads) is what a ``fresh`` rule selects.
"""

import logging
import os
import re
from collections import OrderedDict
from collections.abc import Sequence
from types import ModuleType, TracebackType
from typing import Any

from torch import Tensor, nn
from torchvision.ops import FeaturePyramidNetwork
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

from pgtrain.errors import CheckpointError, ConfigError, first_line
from pgtrain.modeling.registries import BACKBONES
from pgtrain.utils.checks import is_whole
from pgtrain.utils.suggest import did_you_mean, listing

__all__ = ["TimmFPNBackbone", "timm_backbone", "timm_fpn_backbone"]

logger = logging.getLogger("pgtrain.modeling")

TIMM_EXTRA = "pip install 'pgtrain[timm]'"
# Arguments of timm.create_model that the entries set themselves, and what to do instead.
_MANAGED = {
    "num_classes": "the classifier's head is model.num_classes",
    "features_only": "timm_fpn always extracts features, timm never does",
    "out_indices": "only timm_fpn takes out_indices",
    "pretrained_cfg_overlay": "pass the weights file as pretrained_file",
    "pretrained_cfg": "pass the weights file as pretrained_file",
}
_OWN_OPTIONS = ("model_name", "pretrained", "pretrained_file")
_FPN_OPTIONS = ("out_indices", "trainable_layers", "fpn_channels", "extra_pool", "frozen_bn")
# The logger timm reports the keys a pretrained file did not fill on, and its wording.
_TIMM_LOAD_LOGGER = "timm.models._builder"
_MISSING = re.compile(r"^Missing keys \((.*)\) discovered")
_UNEXPECTED = re.compile(r"^Unexpected keys \((.*)\) found")


def _import_timm(entry: str) -> ModuleType:
    """Returns the timm module, or raises a one-line ConfigError naming the extra to install."""
    try:
        import timm
    except ImportError as e:
        raise ConfigError(
            f"model.backbone: the '{entry}' backbone needs timm, which is not installed "
            f"({first_line(e)}); install it with `{TIMM_EXTRA}`"
        ) from None
    return timm


def _check_model_name(timm: ModuleType, entry: str, model_name: Any) -> str:
    """Refuses names that are no timm architecture (with close names) or that name a hub."""
    if not isinstance(model_name, str) or not model_name:
        raise ConfigError(
            f"model.backbone.model_name={model_name!r} must be a timm model name, e.g. "
            "'resnet18' (see timm.list_models())"
        )
    if ":" in model_name:
        raise ConfigError(
            f"model.backbone.model_name='{model_name}' names a model on a hub, which timm would "
            "download; name an architecture from timm.list_models() and pass its weights as "
            "model.backbone.pretrained_file"
        )
    if not timm.is_model(model_name):
        arch = model_name.partition(".")[0]
        suggestion = did_you_mean(arch, timm.list_models())
        raise ConfigError(
            f"model.backbone.model_name='{model_name}' is not a timm model{suggestion} "
            f"(timm {timm.__version__} has {len(timm.list_models()):,}: see timm.list_models())"
        )
    return model_name


def _weights_file(entry: str, pretrained: Any, pretrained_file: Any) -> str | None:
    """Returns the local weights file to load, or None to start from timm's initialization."""
    if pretrained_file is None or pretrained_file == "":  # "": unset on a command line
        if pretrained:
            raise ConfigError(
                f"model.backbone ({entry}): pretrained=True needs the weights as a local file "
                "(nothing is downloaded); set model.backbone.pretrained_file to a timm .pth or "
                ".safetensors file of this model"
            )
        return None
    if pretrained is not None and not pretrained:
        raise ConfigError(
            f"model.backbone ({entry}): pretrained=False but pretrained_file="
            f"{pretrained_file!r} is set; remove one of them"
        )
    path = os.fspath(pretrained_file) if isinstance(pretrained_file, os.PathLike) else None
    path = pretrained_file if isinstance(pretrained_file, str) else path
    if not path:
        raise ConfigError(
            f"model.backbone.pretrained_file={pretrained_file!r} must be the path of a timm "
            ".pth or .safetensors file"
        )
    path = os.path.expanduser(path)
    if not os.path.isfile(path):
        raise ConfigError(
            f"model.backbone.pretrained_file={path!r} does not exist; point it at a local timm "
            ".pth or .safetensors file of this model (or leave it unset to start from scratch)"
        )
    return path


def _check_kwargs(entry: str, kwargs: dict[str, Any]) -> None:
    """Refuses the timm arguments that the entries set themselves."""
    for key in kwargs:
        if key in _MANAGED:
            raise ConfigError(
                f"model.backbone ({entry}): '{key}' is set by the entry itself; {_MANAGED[key]}"
            )


class _TimmLoadReport(logging.Handler):
    """Collects the keys timm's pretrained loader reports as missing or unexpected.

    timm loads with ``strict=False`` when it drops a classifier (always, for features or
    ``num_classes=0``) and only logs what the file did not fill, at INFO. While active, the
    loader's logger is lowered to INFO and kept from propagating; records at or above the level
    it had are passed on to its parent as before.
    """

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.missing: list[str] = []
        self.unexpected: list[str] = []
        self._logger = logging.getLogger(_TIMM_LOAD_LOGGER)
        self._saved = (self._logger.level, self._logger.propagate)
        self._threshold = logging.WARNING

    def __enter__(self) -> "_TimmLoadReport":
        self._saved = (self._logger.level, self._logger.propagate)
        self._threshold = self._logger.getEffectiveLevel()
        self._logger.setLevel(min(logging.INFO, self._threshold))
        self._logger.propagate = False
        self._logger.addHandler(self)
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self._logger.removeHandler(self)
        self._logger.setLevel(self._saved[0])
        self._logger.propagate = self._saved[1]

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        for pattern, found in ((_MISSING, self.missing), (_UNEXPECTED, self.unexpected)):
            m = pattern.match(message)
            if m:
                found.extend(k.strip() for k in m.group(1).split(",") if k.strip())
        parent = self._logger.parent
        if record.levelno >= self._threshold and self._saved[1] and parent is not None:
            parent.handle(record)


def _create(
    timm: ModuleType, entry: str, model_name: str, path: str | None, kwargs: dict[str, Any]
) -> tuple[nn.Module, list[str], list[str]]:
    """Builds the model with timm (loading `path` if given); returns it and the keys the file
    did not fill and those the model did not take, in the unwrapped model's names."""
    options = dict(kwargs)
    if path is not None:
        options.update(pretrained=True, pretrained_cfg_overlay=dict(file=path))
    report = _TimmLoadReport()
    try:
        with report:
            model = timm.create_model(model_name, **options)
    except TypeError as e:
        bad = next((k for k in kwargs if f"'{k}'" in str(e)), None)
        ours = [*_OWN_OPTIONS, *(_FPN_OPTIONS if entry == "timm_fpn" else ())]
        hint = did_you_mean(bad, ours) if bad else ""
        raise ConfigError(
            f"model.backbone ({entry}): timm's '{model_name}' does not take the given options "
            f"({first_line(e)}){hint}; remove or rename that option"
        ) from None
    except (RuntimeError, OSError, ValueError, KeyError, AssertionError) as e:
        if path is None:
            raise
        raise CheckpointError(
            f"model.backbone.pretrained_file={path!r} does not load into timm's '{model_name}' "
            f"({first_line(e)}); is it a timm checkpoint of this model?"
        ) from None
    if path is not None:
        logger.info("Loaded %s weights from %s with timm", model_name, path)
    return model, report.missing, report.unexpected


def _mark_pretrained(
    model: nn.Module,
    names: set[str],
    missing: Sequence[str],
    unexpected: Sequence[str],
    model_name: str,
    path: str,
) -> set[str]:
    """Returns the parameter names of `model` that `path` filled, warning about the rest.

    `missing` uses the unwrapped model's names; a feature wrapper may prefix them (``model.``)
    or join a container's name with its child's (``stages.0`` -> ``stages_0``).
    """
    not_filled = set()
    for key in missing:
        for candidate in (key, f"model.{key}", key.replace(".", "_", 1)):
            if candidate in names:
                not_filled.add(candidate)
                break
    pretrained = names - not_filled
    if names and not pretrained:
        raise CheckpointError(
            f"model.backbone.pretrained_file={path!r} provides none of the parameters of timm's "
            f"'{model_name}' (missing: {listing(sorted(not_filled), 4)}); is it a timm checkpoint "
            "of this model? (a pgtrain checkpoint goes to train.init_checkpoint)"
        )
    if not_filled:
        logger.warning(
            "%s: %d of its %d parameters are not in %s and start fresh: %s",
            model_name,
            len(not_filled),
            len(names),
            path,
            listing(sorted(not_filled), 6),
        )
    if unexpected:
        logger.warning(
            "%s: %d tensors of %s fit no parameter and were ignored: %s",
            model_name,
            len(unexpected),
            path,
            listing(unexpected, 6),
        )
    return pretrained


@BACKBONES.register("timm")
def timm_backbone(
    *,
    model_name: str,
    pretrained: bool | None = None,
    pretrained_file: str | None = None,
    **kwargs: Any,
) -> nn.Module:
    """Builds timm's `model_name` without its classifier, as `ImageClassifier`'s backbone.

    The model returns pooled B x D features (``num_classes=0``); ``embed_dim`` is set to D where
    the model lacks it, so `ImageClassifier` sizes its head without ``model.feature_dim``.

    Args:
        model_name: A name in ``timm.list_models()``, e.g. ``vit_tiny_patch16_224``; a pretrained
            tag (``vit_tiny_patch16_224.augreg_in21k``) picks timm's config for those weights.
        pretrained: Load `pretrained_file`; True without a file is an error (nothing is
            downloaded). Default: whether a file is given.
        pretrained_file: A local timm weights file (``.pth`` or ``.safetensors``) of this model.
        **kwargs: Passed to ``timm.create_model`` (``img_size``, ``drop_path_rate``, ...).

    Raises:
        ConfigError: timm is not installed, the name is unknown (with close names), the file is
            missing or named without pretrained, or timm does not take an option.
        CheckpointError: The file does not load into the model, or provides none of it.
    """
    timm = _import_timm("timm")
    name = _check_model_name(timm, "timm", model_name)
    path = _weights_file("timm", pretrained, pretrained_file)
    _check_kwargs("timm", kwargs)
    model, missing, unexpected = _create(timm, "timm", name, path, {**kwargs, "num_classes": 0})
    width = getattr(model, "head_hidden_size", None) or getattr(model, "num_features", None)
    own = getattr(model, "embed_dim", None)
    if own is None and is_whole(width, at_least=1):
        model.embed_dim = int(width)
    elif is_whole(width, at_least=1) and own != width:
        logger.warning(
            "timm's '%s' has embed_dim=%r but returns %d-wide features; set model.feature_dim=%d",
            name,
            own,
            width,
            width,
        )
    if path is not None:
        names = {n for n, _ in model.named_parameters()}
        model.pretrained_parameter_names = _mark_pretrained(
            model, names, missing, unexpected, name, path
        )
    return model


class TimmFPNBackbone(nn.Module):
    """A timm feature extractor and a feature pyramid over the levels it returns.

    Attributes:
        body: timm's ``features_only`` model; its ``feature_info`` describes every level.
        fpn: torchvision's FeaturePyramidNetwork (plus a "pool" level if ``extra_pool``).
        out_channels: Channels of every pyramid level (MaskRCNN reads it).
        featmap_names: Levels that RoI pooling reads ("0", "1", ...: the pyramid without "pool").
        num_levels: Number of pyramid levels, i.e. of RPN anchor sizes.
        pretrained_parameter_names: The ``body.*`` parameters loaded from the weights file.
    """

    def __init__(
        self, body: nn.Module, take: Sequence[int], out_channels: int, extra_pool: bool
    ) -> None:
        super().__init__()
        self.body = body
        channels = body.feature_info.channels()
        self._take = list(take)
        self.fpn = FeaturePyramidNetwork(
            [channels[i] for i in self._take],
            out_channels,
            extra_blocks=LastLevelMaxPool() if extra_pool else None,
        )
        self.out_channels = out_channels
        self.featmap_names = [str(i) for i in range(len(self._take))]
        self.num_levels = len(self._take) + int(extra_pool)
        self.pretrained_parameter_names: set[str] = set()

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        features = self.body(x)
        if isinstance(features, dict):
            features = list(features.values())
        levels = OrderedDict((str(k), features[i]) for k, i in enumerate(self._take))
        return self.fpn(levels)


@BACKBONES.register("timm_fpn")
def timm_fpn_backbone(
    *,
    model_name: str,
    pretrained: bool | None = None,
    pretrained_file: str | None = None,
    out_indices: Sequence[int] | None = None,
    trainable_layers: int | None = None,
    fpn_channels: int = 256,
    extra_pool: bool = True,
    frozen_bn: bool | None = None,
    **kwargs: Any,
) -> TimmFPNBackbone:
    """Builds timm's `model_name` as a feature extractor with an FPN, for `MaskRCNN`.

    Levels are those of timm's ``feature_info`` (resnet18: strides 2, 4, 8, 16, 32 at levels
    0-4; convnext_atto: 4, 8, 16, 32 at 0-3). Parameter names are ``body.<timm's feature
    model's names>`` and ``fpn.*``.

    Args:
        model_name: A name in ``timm.list_models()`` of a model timm can extract features from.
        pretrained: Load `pretrained_file`; True without a file is an error (nothing is
            downloaded). Default: whether a file is given.
        pretrained_file: A local timm weights file (``.pth`` or ``.safetensors``) of this model
            (its classifier is left out).
        out_indices: Levels that feed the pyramid, increasing. Default: every level timm returns
            by default at stride 4 or coarser (resnet18: 1-4, convnext_atto: 0-3, i.e. P2-P5).
        trainable_layers: How many levels from the top train (0 to the number of levels); the
            rest, with the stem, are frozen. Default: all without weights, else the levels at
            stride 8 and coarser (the stem and the stride-4 level frozen, torchvision's default
            of 3 for a ResNet).
        fpn_channels: Channels of every pyramid level.
        extra_pool: Add a max-pooled level on top, as torchvision does.
        frozen_bn: Turn the body's batch norms into frozen ones (timm's
            ``freeze_batch_norm_2d``). Default: whether weights are loaded.
        **kwargs: Passed to ``timm.create_model`` (``drop_path_rate``, ``img_size``, ...).

    Raises:
        ConfigError: timm is not installed, the name is unknown (with close names), the file is
            missing, an option is invalid, or timm does not take an option or extract features.
        CheckpointError: The file does not load into the model, or provides none of it.
    """
    entry = "timm_fpn"
    timm = _import_timm(entry)
    name = _check_model_name(timm, entry, model_name)
    path = _weights_file(entry, pretrained, pretrained_file)
    _check_kwargs(entry, kwargs)
    if not is_whole(fpn_channels, at_least=1):
        raise ConfigError(
            f"model.backbone.fpn_channels={fpn_channels!r} must be a positive integer"
        )
    options = dict(kwargs, features_only=True)
    if out_indices is not None:
        options["out_indices"] = _checked_indices(out_indices)
    body, missing, unexpected = _create(timm, entry, name, path, options)
    info = body.feature_info
    reductions = [level["reduction"] for level in info.info]
    returned = list(info.out_indices)
    if out_indices is None:
        take = [k for k, i in enumerate(returned) if reductions[i] >= 4] or list(
            range(len(returned))
        )
    else:
        take = list(range(len(returned)))
    if frozen_bn if frozen_bn is not None else path is not None:
        body = timm.layers.freeze_batch_norm_2d(body)
    trainable = _freeze_levels(body, name, trainable_layers, path is not None, reductions)
    backbone = TimmFPNBackbone(body, take, fpn_channels, bool(extra_pool))
    if path is not None:
        names = {n for n, _ in body.named_parameters()}
        loaded = _mark_pretrained(body, names, missing, unexpected, name, path)
        backbone.pretrained_parameter_names = {f"body.{n}" for n in loaded}
    logger.debug(
        "timm_fpn %s: levels %s of %s feed the FPN, the top %d train",
        name,
        [returned[k] for k in take],
        reductions,
        trainable,
    )
    return backbone


def _checked_indices(out_indices: Any) -> list[int]:
    values = list(out_indices) if isinstance(out_indices, Sequence) else None
    if (
        not values
        or isinstance(out_indices, str)
        or not all(is_whole(v, at_least=0) for v in values)
        or values != sorted(set(values))
    ):
        raise ConfigError(
            f"model.backbone.out_indices={out_indices!r} must be increasing level numbers >= 0 "
            "(timm's feature_info levels, e.g. [1, 2, 3, 4] for a ResNet's strides 4-32)"
        )
    return [int(v) for v in values]


def _freeze_levels(
    body: nn.Module,
    model_name: str,
    trainable_layers: int | None,
    pretrained: bool,
    reductions: list[int],
) -> int:
    """Stops gradients of the levels below the top `trainable_layers`; returns that number.

    A parameter belongs to the level whose module holds it (``feature_info``'s ``module``, as
    named in the feature model); one between two such modules (the stem, blocks between two
    returned ones) belongs to the next level, whose output it feeds.
    """
    num = len(reductions)
    if trainable_layers is None:
        trainable_layers = sum(r >= 8 for r in reductions) if pretrained else num
    if not is_whole(trainable_layers, at_least=0, at_most=num):
        raise ConfigError(
            f"model.backbone.trainable_layers={trainable_layers!r} must be an integer in "
            f"[0, {num}] for timm's '{model_name}' (how many of its {num} feature levels, from "
            f"the top, train; {num} trains all)"
        )
    modules = [level["module"] for level in body.feature_info.info]
    heads = [
        (k, tuple(f"{c}." for c in (m, f"model.{m}", m.replace(".", "_", 1))))
        for k, m in enumerate(modules)
    ]
    first_trained = num - trainable_layers
    last_seen = -1
    for name, param in body.named_parameters():
        level = next((k for k, prefixes in heads if name.startswith(prefixes)), None)
        if level is None:
            level = min(last_seen + 1, num - 1)
        else:
            last_seen = max(last_seen, level)
        if level < first_trained:
            param.requires_grad_(False)
    return int(trainable_layers)
