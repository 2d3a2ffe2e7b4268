"""load_vit_state_dict: timm / MAE / BEiT-style ViT weights into pgtrain's VisionTransformer."""

import logging
from collections.abc import Mapping
from typing import Any

from iopath.common.file_io import PathManager
from torch import Tensor, nn

from pgtrain.checkpoint.file_io import read_checkpoint
from pgtrain.checkpoint.model_state import load_model_state
from pgtrain.checkpoint.report import CheckpointReport
from pgtrain.errors import CheckpointError, ConfigError
from pgtrain.modeling.vit import VisionTransformer
from pgtrain.utils.suggest import listing

__all__ = ["load_vit_state_dict"]

logger = logging.getLogger(__name__)

_NOT_BACKBONE = ("head.", "head_dist.", "fc_norm.", "pre_logits.", "decoder", "encoder_to_decoder")
_NOT_BACKBONE_KEYS = ("mask_token", "dist_token")
_WRAPPERS = ("module.", "model.", "encoder.", "backbone.")


def load_vit_state_dict(
    model: VisionTransformer, state: Mapping[str, Any] | str
) -> CheckpointReport:
    """Loads a timm / MAE / BEiT / VideoMAE style ViT state dict (or file) into `model`.

    The weights may sit under a ``model`` / ``state_dict`` / ``module`` entry; keys lose
    ``module.`` / ``model.`` / ``encoder.`` / ``backbone.`` prefixes; ``attn.qkv.bias`` splits
    into ``q_bias`` and ``v_bias`` (the key part is dropped: softmax cancels it); heads,
    ``fc_norm`` and decoders are dropped; a ``pos_embed`` of another grid is interpolated; an
    image patch embedding is inflated over a video model's tubelet. Everything else loads where
    names and shapes match; the rest is reported, never silently dropped.

    Returns:
        The load report; ``report.extra["notes"]`` says what was mapped or dropped, and why.

    Raises:
        ConfigError: `model` is not a VisionTransformer.
        CheckpointError: The file is missing, unreadable or not a state dict.
    """
    if not isinstance(model, VisionTransformer):
        raise ConfigError(
            f"load_vit_state_dict takes a VisionTransformer, got {type(model).__name__}; pass "
            "the ViT itself (e.g. model.backbone.net)"
        )
    source = state if isinstance(state, str) else "<state dict>"
    if isinstance(state, str):
        state = read_checkpoint(PathManager(), state)
    if not isinstance(state, Mapping):
        raise CheckpointError(f"{source} holds a {type(state).__name__}, not a ViT state dict")
    for key in ("model", "state_dict", "module"):
        if isinstance(state.get(key), Mapping):
            state = state[key]
            break
    targets = model.state_dict()
    mapped, notes = _map_vit_keys(model, state, targets)
    report = load_model_state(model, mapped, source)
    report.extra["notes"] = notes
    for note in notes:
        logger.info("load_vit_state_dict(%s): %s", source, note)
    return report


def _map_vit_keys(
    model: VisionTransformer, state: Mapping[str, Any], targets: Mapping[str, Tensor]
) -> tuple[dict[str, Any], list[str]]:
    """Renames and reshapes foreign ViT keys to this model's; returns them and notes."""
    mapped: dict[str, Any] = {}
    stripped, split, dropped = set(), 0, []
    for key, value in state.items():
        name = key
        while name not in targets and name.startswith(_WRAPPERS):
            stripped.add(name.partition(".")[0])
            name = name.partition(".")[2]
        if name.startswith(_NOT_BACKBONE) or name in _NOT_BACKBONE_KEYS:
            dropped.append(f"{key} (not part of the backbone)")
        elif name.endswith("attn.qkv.bias") and _qkv_base(name) + "q_bias" in targets:
            base = _qkv_base(name)
            mapped[f"{base}q_bias"], _, mapped[f"{base}v_bias"] = value.chunk(3)
            split += 1
        elif name == "pos_embed" and not isinstance(model.pos_embed, nn.Parameter):
            dropped.append(f"{key} (this model's pos_embed is the fixed sin-cos table)")
        elif name == "cls_token" and model.cls_token is None:
            dropped.append(f"{key} (this model has no cls token)")
        else:
            mapped[name] = _fitted(model, name, value, targets)
    notes = [f"stripped prefixes {sorted(stripped)}"] if stripped else []
    if split:
        notes.append(f"split {split} attn.qkv.bias into q_bias / v_bias (key bias dropped)")
    if dropped:  # an MAE file holds ~100 decoder keys: name a few
        notes.append(f"dropped {len(dropped)}: {listing(dropped, 8)}")
    return mapped, notes


def _qkv_base(name: str) -> str:
    """Returns ``blocks.N.attn.`` of ``blocks.N.attn.qkv.bias``."""
    return name.removesuffix("qkv.bias")


def _fitted(model: VisionTransformer, name: str, value: Any, targets: Mapping[str, Any]) -> Any:
    """Returns `value` reshaped for `name` where the mapping is known, else unchanged."""
    target = targets.get(name)
    if not isinstance(value, Tensor) or target is None or value.shape == target.shape:
        return value
    if name == "pos_embed":
        fitted = model.fit_pos_embed(value)
        return value if fitted is None else fitted
    if name == "patch_embed.proj.weight" and value.dim() == 4 and target.dim() == 5:
        # An image patch filter spread evenly over the tubelet's frames gives the same response
        # on a still clip (I3D-style inflation).
        frames = target.shape[2]
        return value.unsqueeze(2).repeat(1, 1, frames, 1, 1) / frames
    return value
