"""Layer ids for layer-wise LR decay: which depth each parameter sits at.

A resolver is a plain function ``(model, names, prefix) -> LayerIds | None``: `names` are the
model's parameter names in order, `prefix` optionally says where the layered part sits
(``"backbone.net"``), and None means "this naming is not in the model". Layer 0 is the input side
(embeddings, stem), layer ``i + 1`` is block ``i``, and every parameter the resolver leaves out is
the last layer, ``num_layers + 1`` (final norm, heads, necks), as in BEiT / MAE / VideoMAE v2.
Register your own with ``@LAYER_ID_RESOLVERS.register("name")`` and select it by name.
"""

import math
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from torch import nn

from pgtrain.errors import ConfigError
from pgtrain.registry import Registry

__all__ = ["LAYER_ID_RESOLVERS", "LayerIds", "resolve_layer_ids"]

LAYER_ID_RESOLVERS = Registry(
    "LAYER_ID_RESOLVERS",
    hint="built-in resolvers register on `import pgtrain.param_groups`; "
    "a project's on importing its module from its config file",
)


@dataclass(frozen=True)
class LayerIds:
    """Layer ids found by a resolver.

    Attributes:
        ids: the layer id of every parameter the resolver placed (0 .. num_layers); parameters
            not listed are the last layer, ``num_layers + 1``.
        num_layers: the number of blocks (the ViT's depth, or the number of ResNet stages).
        source: what was found, for the report (e.g. ``vit at 'backbone.net.' (12 blocks)``).
    """

    ids: dict[str, int]
    num_layers: int
    source: str


Resolver = Callable[[nn.Module, Sequence[str], str | None], LayerIds | None]

# ViT naming of VideoMAE v2, BEiT, MAE, timm and pgtrain's ViT: `<prefix>blocks.<i>.`.
_VIT_BLOCK = re.compile(r"^((?:[^.]+\.)*?)blocks\.(\d+)\.")
_VIT_EMBED = frozenset(
    {"cls_token", "mask_token", "dist_token", "reg_token", "pos_embed", "patch_embed"}
)
# torchvision.models.VisionTransformer: `<prefix>encoder.layers.encoder_layer_<i>.`.
_TV_VIT_BLOCK = re.compile(r"^((?:[^.]+\.)*?)encoder\.layers\.encoder_layer_(\d+)\.")
_TV_VIT_EMBED = ("class_token", "conv_proj.", "encoder.pos_embedding")
# ResNet stages: torchvision `layer1..4` after `conv1`/`bn1`, Detectron2 `res2..5` after `stem`.
_RESNET_STAGE = re.compile(r"^((?:[^.]+\.)*?)(?:layer([1-4])|res([2-5]))\.")
_RESNET_STEM = ("conv1.", "bn1.", "stem.")


@LAYER_ID_RESOLVERS.register("vit")
def resolve_vit(model: nn.Module, names: Sequence[str], prefix: str | None) -> LayerIds | None:
    """ViT names (VideoMAE v2, timm, BEiT, MAE): ``cls_token``/``pos_embed``/``patch_embed`` are 0,
    ``blocks.i`` is ``i + 1``, wherever the ViT sits (``backbone.net.blocks.3``)."""
    return _resolve_numbered(
        "vit",
        names,
        prefix,
        _VIT_BLOCK,
        lambda m: int(m.group(2)) + 1,
        lambda rest: rest.partition(".")[0] in _VIT_EMBED,
    )


@LAYER_ID_RESOLVERS.register("torchvision_vit")
def resolve_torchvision_vit(
    model: nn.Module, names: Sequence[str], prefix: str | None
) -> LayerIds | None:
    """torchvision ViT names: ``class_token``, ``conv_proj``, ``encoder.pos_embedding`` are 0,
    ``encoder.layers.encoder_layer_i`` is ``i + 1``."""
    return _resolve_numbered(
        "torchvision_vit",
        names,
        prefix,
        _TV_VIT_BLOCK,
        lambda m: int(m.group(2)) + 1,
        lambda rest: rest.startswith(_TV_VIT_EMBED),
    )


@LAYER_ID_RESOLVERS.register("resnet")
def resolve_resnet(model: nn.Module, names: Sequence[str], prefix: str | None) -> LayerIds | None:
    """ResNet stages: the stem is 0, ``layer1..4`` (or Detectron2's ``res2..5``) are 1..4."""

    def stage(m: re.Match) -> int:
        return int(m.group(2)) if m.group(2) else int(m.group(3)) - 1

    return _resolve_numbered(
        "resnet",
        names,
        prefix,
        _RESNET_STAGE,
        stage,
        lambda rest: rest.startswith(_RESNET_STEM),
    )


@LAYER_ID_RESOLVERS.register("sequence")
def resolve_sequence(model: nn.Module, names: Sequence[str], prefix: str | None) -> LayerIds | None:
    """Any model: the ModuleList/Sequential with the most parameterized children is the blocks.

    Child ``k`` is layer ``k + 1``; parameters that come before the container in the model are
    layer 0 (embeddings), those after it the last layer. `prefix` names the container.
    """
    best: tuple[str, list[str]] | None = None
    wanted = None if prefix is None else prefix.rstrip(".")
    for path, module in model.named_modules():
        if not isinstance(module, nn.ModuleList | nn.Sequential) or wanted not in (None, path):
            continue
        children = [
            c for c, child in module.named_children() if next(child.parameters(), None) is not None
        ]
        if len(children) >= 2 and (best is None or len(children) > len(best[1])):
            best = (path, children)
    if best is None:
        return None
    path, children = best
    head = f"{path}." if path else ""
    layer_of_child = {c: k + 1 for k, c in enumerate(children)}
    ids: dict[str, int] = {}
    seen_blocks = False
    for name in names:
        layer = (
            layer_of_child.get(name[len(head) :].partition(".")[0])
            if name.startswith(head)
            else None
        )
        if layer is not None:
            ids[name], seen_blocks = layer, True
        elif not seen_blocks:
            ids[name] = 0
    return LayerIds(ids, len(children), f"sequence '{path or '<model>'}' ({len(children)} blocks)")


# timm's group_matcher suffix meaning "same layer as the group before" (a ViT's final norm).
_MATCH_PREV_GROUP = 99999.0


@LAYER_ID_RESOLVERS.register("group_matcher")
def resolve_group_matcher(
    model: nn.Module, names: Sequence[str], prefix: str | None
) -> LayerIds | None:
    """timm-style hints: the layers a module's ``group_matcher(coarse=False)`` declares.

    The first module (the model itself, or the one at `prefix`) with a ``group_matcher`` method
    orders its parameters as timm's ``param_groups_layer_decay`` does: each name gets the ordinal
    of the first matching pattern (plus the pattern's numbers), ordinals are numbered in sorted
    order, a ``(99999,)`` suffix joins the group before it (timm's ViT puts the final ``norm``
    with the last block), and unmatched names (the head) come last. The last group is at scale 1.
    """
    found = _group_matcher_module(model, prefix)
    if found is None:
        return None
    head, module = found
    ordinal = _ordinal_fn(module.group_matcher(coarse=False))
    if head:
        keys = {n: ordinal(n[len(head) :]) for n in names if n.startswith(head)}
    else:
        keys = dict(zip(names, map(ordinal, names), strict=True))
    distinct = set(keys.values())
    layer_of_key: dict[tuple, int] = {}
    lid = -1
    for key in sorted(distinct):
        if lid < 0 or key[-1] != _MATCH_PREV_GROUP:
            lid += 1
        layer_of_key[key] = lid
    ids = {n: layer_of_key[k] for n, k in keys.items()}
    # The last group takes scale 1, as in timm; parameters outside the module join it when the
    # module has an unmatched (head) group, else they form a last layer of their own.
    has_head = (math.inf,) in distinct or len(keys) == len(names)
    num_layers = lid - 1 if has_head else lid
    where = head.rstrip(".") or "<model>"
    return LayerIds(ids, num_layers, f"group_matcher of '{where}' ({lid + 1} layer groups)")


def _group_matcher_module(model: nn.Module, prefix: str | None) -> tuple[str, nn.Module] | None:
    wanted = None if prefix is None else prefix.rstrip(".")
    for path, module in model.named_modules():
        if wanted not in (None, path):
            continue
        if callable(getattr(type(module), "group_matcher", None)):
            return (f"{path}." if path else ""), module
    return None


def _ordinal_fn(spec: Any) -> Callable[[str], tuple]:
    """Turns a group_matcher's answer (a dict of patterns, or a function) into name -> ordinal."""
    if callable(spec):

        def call(name: str) -> tuple:
            value = spec(name)
            return tuple(value) if isinstance(value, Iterable) else (value,)

        return call
    compiled = []
    for position, patterns in enumerate(spec.values()):
        if patterns is None:
            continue
        if isinstance(patterns, str):
            patterns = [(patterns, None)]
        for pattern, suffix in patterns:
            tail = tuple(float(x) for x in suffix or ())
            compiled.append((re.compile(pattern).match, (float(position),), tail, {}))

    def match(name: str) -> tuple:
        for regex_match, start, tail, of_groups in compiled:
            m = regex_match(name)
            if m:
                # The ordinal depends on the pattern and its groups alone (``blocks.3`` is the
                # same for every parameter of block 3): converted once per distinct groups.
                groups = m.groups()
                found = of_groups.get(groups)
                if found is None:
                    numbers = (float(g) for g in groups if g is not None)
                    found = of_groups[groups] = (*start, *numbers, *tail)
                return found
        return (math.inf,)

    return match


@LAYER_ID_RESOLVERS.register("auto")
def resolve_auto(model: nn.Module, names: Sequence[str], prefix: str | None) -> LayerIds | None:
    """Tries ``group_matcher`` (a timm model's own hints), ``vit``, ``torchvision_vit``,
    ``resnet`` and then ``sequence``; the first that recognizes the model wins."""
    reasons = []
    for key in ("group_matcher", "vit", "torchvision_vit", "resnet", "sequence"):
        try:
            found = LAYER_ID_RESOLVERS.get(key)(model, names, prefix)
        except ConfigError as e:  # e.g. two ViTs: let a later resolver try
            reasons.append(str(e))
            continue
        if found is not None:
            return LayerIds(found.ids, found.num_layers, f"auto: {found.source}")
    detail = f" ({'; '.join(reasons)})" if reasons else ""
    raise ConfigError(
        f"resolver 'auto' found no layers in the model{detail}; pass resolver= one of "
        f"{', '.join(LAYER_ID_RESOLVERS.names())} (and prefix= where the blocks sit), or register "
        "a resolver in LAYER_ID_RESOLVERS"
    )


def resolve_layer_ids(
    model: nn.Module,
    names: Sequence[str],
    resolver: str | Resolver = "auto",
    prefix: str | None = None,
) -> LayerIds:
    """Runs a resolver (a registry name or a function) and insists it finds layers.

    Raises:
        ConfigError: the resolver does not recognize the model's names.
    """
    fn = LAYER_ID_RESOLVERS.get(resolver) if isinstance(resolver, str) else resolver
    found = fn(model, names, prefix)
    if found is None:
        where = f" under prefix '{prefix}'" if prefix is not None else ""
        raise ConfigError(
            f"resolver '{resolver}' found no layers{where}; check the model's parameter names or "
            f"use another resolver: {', '.join(LAYER_ID_RESOLVERS.names())}"
        )
    return found


def _resolve_numbered(
    kind: str,
    names: Sequence[str],
    prefix: str | None,
    block: re.Pattern,
    block_id: Callable[[re.Match], int],
    is_embedding: Callable[[str], bool],
) -> LayerIds | None:
    """Shared by the name-based resolvers: find the blocks' prefix, then number every name."""
    found = {}
    for name in names:
        m = block.match(name)
        if m:
            found[name] = (m.group(1), block_id(m))
    prefixes = list(dict.fromkeys(p for p, _ in found.values()))
    if prefix is not None:
        wanted = prefix if prefix == "" or prefix.endswith(".") else prefix + "."
        prefixes = [p for p in prefixes if p == wanted]
    if not prefixes:
        return None
    if len(prefixes) > 1:
        with_embeddings = [
            p for p in prefixes if any(n.startswith(p) and is_embedding(n[len(p) :]) for n in names)
        ]
        if len(with_embeddings) != 1:
            raise ConfigError(
                f"resolver '{kind}' found blocks under several prefixes "
                f"({', '.join(repr(p) for p in prefixes)}); pass prefix= to choose"
            )
        prefixes = with_embeddings
    head = prefixes[0]
    ids = {n: layer for n, (p, layer) in found.items() if p == head}
    for name in names:
        if name not in ids and name.startswith(head) and is_embedding(name[len(head) :]):
            ids[name] = 0
    num_layers = max(ids.values())  # the deepest block's id
    return LayerIds(ids, num_layers, f"{kind} at '{head}' ({num_layers} blocks)")
