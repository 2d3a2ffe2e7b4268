"""The ``layer_decay`` builder: layer-wise LR decay for ViTs (BEiT, MAE, VideoMAE v2) and others."""

from collections.abc import Collection, Sequence
from itertools import repeat
from typing import Any

from torch import nn

from pgtrain.errors import ConfigError
from pgtrain.param_groups.builders.registry import (
    PARAM_GROUP_BUILDERS,
    RuleSpecs,
    paused_gc,
    plan_param_groups,
    weight_decay_exemptions,
)
from pgtrain.param_groups.layer_ids import Resolver, resolve_layer_ids
from pgtrain.param_groups.model_params import ModelParams, collect_model_params
from pgtrain.param_groups.record import ParamGroups
from pgtrain.param_groups.rules import parse_rules
from pgtrain.utils.checks import is_real, is_whole

__all__ = ["layer_decay_param_groups", "layer_scales"]


def layer_scales(decay: float, num_layers: int) -> list[float]:
    """Returns the LR scale of layers ``0 .. num_layers + 1``: ``decay ** (num_layers + 1 - i)``."""
    return [decay ** (num_layers + 1 - i) for i in range(num_layers + 2)]


@PARAM_GROUP_BUILDERS.register("layer_decay")
def layer_decay_param_groups(
    model: nn.Module,
    *,
    lr: float,
    weight_decay: float = 0.0,
    decay: float = 0.75,
    resolver: str | Resolver = "auto",
    prefix: str | None = None,
    num_layers: int | None = None,
    skip: Sequence[str] = (),
    rules: RuleSpecs = (),
    fresh: Collection[str] | None = None,
    merge_labels: bool = False,
) -> ParamGroups:
    """Scales each layer's LR by ``decay ** (num_layers + 1 - layer_id)``, one group per layer.

    Layer ids come from a resolver (see `pgtrain.param_groups.layer_ids`): embeddings are layer
    0, block ``i`` is layer ``i + 1``, everything else (final norm, heads, parameters outside the
    ViT) is the last layer, ``num_layers + 1``, at scale 1. Groups are labelled ``layer_<id>``.
    Biases (``bias``, ``*_bias``), 1-D parameters, the `skip` names and the model's
    ``no_weight_decay()`` hints get no weight decay. `rules` apply afterwards, so a rule's
    ``lr_mult`` (e.g. heads at 10x) multiplies the layer's scale.

    Args:
        model: the model.
        lr: the base learning rate (that of the last layer).
        weight_decay: the base weight decay.
        decay: the per-layer factor, in (0, 1]; 1 turns the decay off.
        resolver: a name in `LAYER_ID_RESOLVERS` (``auto``, ``vit``, ``torchvision_vit``,
            ``resnet``, ``sequence``) or a resolver function.
        prefix: where the layered part sits (``backbone.net``); found automatically if None.
        num_layers: the depth; defaults to the number of blocks found (STMixer's
            ``cfg.ViT.DEPTH``), and may not be smaller.
        skip: parameter names without weight decay (full names or dotted suffixes such as
            ``pos_embed``); each must match a parameter, unless the model declares it in a
            ``no_weight_decay()`` or as a buffer (then it is a note).
        rules: further rules, applied after the layer scales and the weight-decay exemptions.
        fresh: names of parameters the initial checkpoint did not provide.
        merge_labels: merge groups with equal hyperparameters across labels.
    """
    if not is_real(decay, above=0, at_most=1):
        raise ConfigError(f"decay must be a number in (0, 1], got {decay!r}")
    with paused_gc():  # the inventory and layer ids allocate per parameter too
        params = collect_model_params(model)
        found = resolve_layer_ids(model, params.names, resolver, prefix)
    depth = _depth(num_layers, found.num_layers)
    scales = layer_scales(decay, depth)
    last = depth + 1

    # One tuple per layer, shared by its parameters, so `decide` settles each layer once.
    steps = [
        (("layer_decay", "group", f"layer_{layer}"), ("layer_decay", "lr_mult", scales[layer]))
        for layer in range(last + 1)
    ]
    start = [steps[found.ids.get(name, last)] for name in params.names]

    specs: list[dict[str, Any]] = weight_decay_exemptions()
    skip = [skip] if isinstance(skip, str) else list(skip)  # a generator is read once
    absent = _declared_but_absent(model, params, skip)
    present = [name for name in skip if name not in absent]
    if present:
        specs.append({"id": "skip", "names": present, "weight_decay": 0.0})
    notes = [f"layer ids: {found.source}"]
    if absent:
        notes.append(
            f"skip names that are no parameter of this model (ignored): {', '.join(absent)} "
            "(declared by no_weight_decay() or a buffer)"
        )
    source = (
        f"layer_decay (decay={decay:g}, {found.source}; "
        f"scale = {decay:g} ** ({depth} + 1 - layer_id))"
    )
    return plan_param_groups(
        model,
        [*parse_rules(specs, "layer_decay"), *parse_rules(rules)],
        builder="layer_decay",
        lr=lr,
        weight_decay=weight_decay,
        fresh=fresh,
        start=start,
        sources={"layer_decay": source},
        notes=notes,
        merge_labels=merge_labels,
        params=params,
    )


def _declared_but_absent(model: nn.Module, params: ModelParams, skip: list[str]) -> list[str]:
    """Returns the `skip` names that match no parameter but that the model itself declares.

    timm's idiom ``skip=list(model.no_weight_decay())`` names tokens (``dist_token``,
    ``reg_token``) a given model may lack, and a fixed sin-cos ``pos_embed`` is a buffer; neither
    is a typo. Any other name that matches nothing stays an error (raised by the ``skip`` rule).
    """

    def names(entry: str, candidates: Sequence[str]) -> bool:
        suffix = "." + entry
        return entry in candidates or any(map(str.endswith, candidates, repeat(suffix)))

    exact = params.index_of_name  # every full name: most entries are one (``pos_embed``)
    missing = [
        e
        for e in skip
        if not (isinstance(e, str) and e in exact) and not names(e, params.all_names)
    ]
    if not missing:
        return []
    declared = [e for e in missing if names(e, params.no_weight_decay_hints)]
    if len(declared) < len(missing):  # the buffers, only for what the hints do not declare
        buffers = [  # from the modules the parameters were collected from: no second walk
            f"{prefix}.{local}" if prefix else local
            for prefix, module in params.modules
            for local, buffer in module._buffers.items()
            if buffer is not None
        ]
        declared = [e for e in missing if e in declared or names(e, buffers)]
    return declared


def _depth(num_layers: int | None, found: int) -> int:
    if num_layers is None:
        return found
    if not is_whole(num_layers, at_least=found):
        raise ConfigError(
            f"num_layers is {num_layers!r} but the model has {found} blocks; leave "
            "it unset to use the number found"
        )
    return num_layers
