"""The ``muon`` builder: which parameters Muon updates, which AdamW does, and why.

Muon orthogonalizes the update of a weight matrix, which suits the hidden layers' matrices (and
conv filters, taken as ``(out, in x kernel)`` matrices) but not the parameters whose rows are not
a linear map between hidden features. Every Muon implementation in use leaves these to AdamW:

- 1-D parameters (biases, norms' scales),
- embeddings (``nn.Embedding``) and other parameters that are neither a matrix nor a conv filter
  (a ViT's ``pos_embed`` and ``cls_token``),
- the first conv (the stem, which sees pixels; a ViT's patch embedding),
- output layers: modules named like a classifier or a detector's predictor (``head``, ``fc``,
  ``classifier``, ``cls_score``, ``bbox_pred``, ``cls_logits``, ``mask_fcn_logits``, ...).

Each parameter's route and its reason are builder steps, so the table, ``--explain`` and the
record show them; rules apply afterwards and may move a parameter
(``dict(match="backbone.blocks.0.*", optimizer="adamw")``). The groups carry the route as their
``optimizer`` key, which `pgtrain.solver.MuonAdamW` reads.
"""

from collections.abc import Collection, Iterable, Sequence
from typing import Any

from torch import nn

from pgtrain.param_groups.builders import (
    PARAM_GROUP_BUILDERS,
    RuleSpecs,
    plan_param_groups,
    weight_decay_exemptions,
)
from pgtrain.param_groups.model_params import ModelParams, collect_model_params
from pgtrain.param_groups.rules import parse_rules

__all__ = ["OUTPUT_LAYER_NAMES", "muon_param_groups", "muon_routes"]

OUTPUT_LAYER_NAMES = (
    "head",
    "fc",
    "classifier",
    "logits",
    "lm_head",
    "cls_score",
    "bbox_pred",
    "cls_logits",
    "mask_fcn_logits",
    "predictor",
)

# Reason id -> how it shows in reports.
REASONS = {
    "muon: matrix": "muon: a hidden layer's weight matrix",
    "muon: conv": "muon: a conv filter, updated as an (out, in x kernel) matrix",
    "adamw: 1-D": "adamw: a 1-D parameter (bias, norm)",
    "adamw: embedding": "adamw: an embedding",
    "adamw: not a matrix": "adamw: neither a matrix nor a conv filter (e.g. pos_embed)",
    "adamw: stem": "adamw: the first conv (the stem)",
    "adamw: output layer": "adamw: an output layer (a head or predictor)",
}


def muon_routes(
    params: ModelParams, output_layers: Sequence[str] = OUTPUT_LAYER_NAMES
) -> list[tuple[str, str]]:
    """Returns ``(route, reason id)`` for each parameter of `params`, in order."""
    owner_names = {id(m): name for name, m in params.modules}
    stem = next((m for _, m in params.modules if isinstance(m, nn.modules.conv._ConvNd)), None)
    outputs = set(output_layers)
    routes = []
    for p, owner in zip(params.tensors, params.owners, strict=True):
        leaf = owner_names.get(id(owner), "").rsplit(".", 1)[-1]
        is_conv = isinstance(owner, nn.modules.conv._ConvNd)
        if p.ndim < 2:
            route = ("adamw", "adamw: 1-D")
        elif isinstance(owner, nn.Embedding | nn.EmbeddingBag):
            route = ("adamw", "adamw: embedding")
        elif p.ndim > 2 and not is_conv:
            route = ("adamw", "adamw: not a matrix")
        elif owner is stem:
            route = ("adamw", "adamw: stem")
        elif leaf in outputs:
            route = ("adamw", "adamw: output layer")
        else:
            route = ("muon", "muon: conv" if is_conv else "muon: matrix")
        routes.append(route)
    return routes


@PARAM_GROUP_BUILDERS.register("muon")
def muon_param_groups(
    model: nn.Module,
    *,
    lr: float,
    weight_decay: float = 0.0,
    output_layers: Sequence[str] = OUTPUT_LAYER_NAMES,
    rules: RuleSpecs = (),
    fresh: Collection[str] | None = None,
    merge_labels: bool = False,
) -> Any:
    """Routes each parameter to Muon or AdamW (groups ``muon`` and ``adamw``), for `MuonAdamW`.

    Biases, 1-D parameters and the model's ``no_weight_decay()`` hints get no weight decay, as in
    the other builders. `rules` apply afterwards (an ``optimizer`` setting moves a parameter).

    Args:
        model: the model.
        lr: the base learning rate of both parts.
        weight_decay: the base weight decay.
        output_layers: module names (the last part of the name) that are output layers.
        rules: further rules.
        fresh: names of parameters the initial checkpoint did not provide.
        merge_labels: merge groups with equal hyperparameters across labels.
    """
    params = collect_model_params(model)
    routes = muon_routes(params, output_layers)

    def start(i: int) -> Iterable[tuple[str, str, Any]]:
        route, reason = routes[i]
        return [(reason, "group", route), (reason, "optimizer", route)]

    counts = {r: sum(1 for route, _ in routes if route == r) for r in ("muon", "adamw")}
    return plan_param_groups(
        model,
        [*parse_rules(weight_decay_exemptions(), "muon"), *parse_rules(rules)],
        builder="muon",
        lr=lr,
        weight_decay=weight_decay,
        fresh=fresh,
        start=start,
        sources=REASONS,
        notes=[f"routes: {counts['muon']} tensors to Muon, {counts['adamw']} to AdamW"],
        merge_labels=merge_labels,
        params=params,
    )
