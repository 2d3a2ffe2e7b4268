"""The ``muon`` builder: which parameters Muon updates, which AdamW does, and why.

Muon orthogonalizes the update of a weight matrix, which suits the matrices of hidden layers (and
conv filters, taken as ``(out, in x kernel)`` matrices) but not parameters whose rows are not a
linear map between hidden features. Each parameter is routed by the first of these that applies:

1. A 1-D parameter (bias, norm scale) -> AdamW.
2. The model's declared roles -> AdamW:

   - embeddings: the weights of ``nn.Embedding`` / ``nn.EmbeddingBag``, and any parameter tied
     to one (an output layer sharing the embedding's tensor);
   - the classifier: what ``get_classifier()`` returns (timm), else
     ``pretrained_cfg['classifier']`` / ``default_cfg['classifier']``, else the last linear layer
     of the model's ``classifier``, ``fc``, ``head`` or ``heads`` attribute (torchvision) or of
     one named ``*_head`` / ``*_classifier``;
   - the stem, the layer that sees the input: ``pretrained_cfg['first_conv']`` (timm), else the
     model's first conv or linear layer (a ViT's patch embedding, linear or conv); none when the
     first layer is an embedding;
   - lookup tables: parameters the model lists in ``no_weight_decay()`` (timm lists position
     tables and tokens there) that are not the weight of a linear, conv or attention layer.

3. Names and shapes -> AdamW, for what the model does not declare: a bare parameter named like a
   position table or token (`LOOKUP_TABLE_NAMES`: ``pos_embed``, ``cls_token``,
   ``relative_position_bias_table``, ...); a layer named like an output layer
   (`OUTPUT_LAYER_NAMES`: a detector's ``cls_score``, ``bbox_pred``, ...); then timm's shape rules
   for Muon (``timm.optim.muon._is_suitable_for_muon``): fewer than two dimensions over 1, a
   leading dimension of 1 (tokens, ``(1, N, D)`` position tables, depthwise conv filters), a side
   under 4 or an aspect ratio over 128 once flattened; and a parameter of more than 2 dimensions
   that is not a conv filter.
4. Everything else -> Muon: the weights of linear, conv and attention layers, and bare 2-D
   parameters of no declared role (taken as matrices by their shape).

Each parameter's route and its reason are builder steps, so the table, ``--explain`` and the
record show them; rules apply afterwards and may move a parameter
(``dict(match="backbone.blocks.0.*", optimizer="adamw")``). The groups carry the route as their
``optimizer`` key, which `pgtrain.solver.MuonAdamW` reads (and refuses groups that leave either
algorithm with nothing).
"""

from collections.abc import Collection, Iterable, Mapping, Sequence
from fnmatch import fnmatchcase
from typing import Any, NamedTuple

from torch import nn

from pgtrain.param_groups.builders.registry import (
    PARAM_GROUP_BUILDERS,
    RuleSpecs,
    plan_param_groups,
    weight_decay_exemptions,
)
from pgtrain.param_groups.model_params import ModelParams, collect_model_params
from pgtrain.param_groups.rules import parse_rules
from pgtrain.param_groups.settings import OPTIMIZER_PARTS

__all__ = [
    "LOOKUP_TABLE_NAMES",
    "OUTPUT_LAYER_NAMES",
    "Route",
    "muon_param_groups",
    "muon_routes",
]

# Module names (the last part of the name) of output layers that no model declares: the
# predictors of torchvision's detectors.
# (A model's own classifier, `head` / `fc` / `classifier`, is found by its role above: by name
# alone, a hidden `blocks.0.fc` would pass for one.)
OUTPUT_LAYER_NAMES = (
    "lm_head",
    "cls_score",
    "bbox_pred",
    "bbox_reg",
    "cls_logits",
    "mask_fcn_logits",
    "predictor",
)

# Parameter names (the last part) of position tables and tokens in timm, torchvision, SAM and
# ViTDet, for parameters that no no_weight_decay() declares.
LOOKUP_TABLE_NAMES = (
    "*pos_embed*",
    "*pos_embedding*",
    "*position_embedding*",
    "*position_bias*",
    "*relative_position*",
    "rel_pos*",
    "*_token",
    "*_tokens",
)

# Torchvision's attributes for a classification model's classifier.
CLASSIFIER_ATTRIBUTES = ("classifier", "fc", "head", "heads")

_CONV = nn.modules.conv._ConvNd
_EMBEDDINGS = (nn.Embedding, nn.EmbeddingBag)
# Modules whose weights are linear maps (a weight of any other module is a "bare" parameter).
_LAYERS = (nn.Linear, nn.Bilinear, _CONV, nn.MultiheadAttention, nn.RNNBase, *_EMBEDDINGS)


class Route(NamedTuple):
    """Where a parameter goes: ``optimizer`` (``muon`` / ``adamw``), ``reason`` (a short id, shown
    in the group table) and ``why`` (the sentence ``--explain`` shows)."""

    optimizer: str
    reason: str
    why: str


def _r(optimizer: str, reason: str, why: str) -> Route:
    return Route(optimizer, f"{optimizer}: {reason}", f"{optimizer}: {why}")


ONE_D = _r("adamw", "1-D", "a 1-D parameter (bias, norm)")
EMBEDDING = _r("adamw", "embedding", "an embedding (nn.Embedding)")
TIED = _r("adamw", "tied to an embedding", "tied to an embedding (one tensor, several modules)")
NO_WEIGHT_DECAY = _r("adamw", "lookup table", "a lookup table (no_weight_decay())")
NAMED_TABLE = _r(
    "adamw", "lookup table (name)", "a lookup table (a position table or token, by its name)"
)
OUTPUT_LAYER = _r("adamw", "output layer", "an output layer (by its module's name)")
SHAPE = {
    "unit": _r("adamw", "unit dims", "fewer than two dimensions over 1 (timm's rule)"),
    "leading": _r(
        "adamw", "leading 1", "a leading dimension of 1, as tokens and tables have (timm's rule)"
    ),
    "depthwise": _r(
        "adamw", "depthwise conv", "a conv filter with one input channel: depthwise (timm's rule)"
    ),
    "not matrix": _r("adamw", "not a matrix", "neither a matrix nor a conv filter"),
    "small": _r("adamw", "side < 4", "a side under 4 once flattened (timm's rule)"),
    "aspect": _r("adamw", "aspect > 128", "an aspect ratio over 128 once flattened (timm's rule)"),
}
MATRIX = _r("muon", "matrix", "a hidden layer's weight matrix")
CONV = _r("muon", "conv", "a conv filter, updated as an (out, in x kernel) matrix")
BARE_MATRIX = _r("muon", "2-D parameter", "a 2-D parameter of no declared role (a matrix by shape)")


def muon_routes(
    params: ModelParams,
    output_layers: Sequence[str] = OUTPUT_LAYER_NAMES,
    lookup_tables: Sequence[str] = LOOKUP_TABLE_NAMES,
) -> list[Route]:
    """Returns the `Route` of each parameter of `params`, in order (see the module docstring)."""
    roles = _declared_roles(params)
    owner_names = {id(m): name for name, m in params.modules}
    outputs = set(output_layers)
    routes = []
    for i, (p, owner) in enumerate(zip(params.tensors, params.owners, strict=True)):
        bare = not isinstance(owner, _LAYERS)
        local = params.names[i].rsplit(".", 1)[-1]
        if p.ndim < 2:
            route = ONE_D
        elif i in roles:
            route = roles[i]
        elif bare and i in params.hinted_indices:
            route = NO_WEIGHT_DECAY
        elif bare and any(fnmatchcase(local, pattern) for pattern in lookup_tables):
            route = NAMED_TABLE
        elif owner_names.get(id(owner), "").rsplit(".", 1)[-1] in outputs:
            route = OUTPUT_LAYER
        else:
            route = _by_shape(p.shape, owner, bare)
        routes.append(route)
    return routes


def _by_shape(shape: Sequence[int], owner: nn.Module, bare: bool) -> Route:
    """timm's shape rules for Muon, then Muon by the kind of layer."""
    is_conv = isinstance(owner, _CONV)
    if sum(1 for d in shape if d > 1) < 2:
        return SHAPE["unit"]
    if shape[0] == 1 or shape[1] == 1:
        return SHAPE["depthwise" if is_conv and shape[1] == 1 else "leading"]
    if len(shape) > 2 and not is_conv:
        return SHAPE["not matrix"]
    rows = shape[0]
    cols = 1
    for d in shape[1:]:
        cols *= d
    if min(rows, cols) < 4:
        return SHAPE["small"]
    if max(rows, cols) / min(rows, cols) > 128:
        return SHAPE["aspect"]
    return CONV if is_conv else BARE_MATRIX if bare else MATRIX


def _declared_roles(params: ModelParams) -> dict[int, Route]:
    """Routes the parameters whose role the model declares: embeddings (and what is tied to
    them), then the classifier, then the stem (a parameter keeps its first role)."""
    index = params.index_of_tensor
    registered_by: dict[int, list[nn.Module]] = {}
    for _, module in params.modules:
        for t in module._parameters.values():
            if t is not None:
                registered_by.setdefault(id(t), []).append(module)
    roles: dict[int, Route] = {}
    for i, t in enumerate(params.tensors):
        modules = registered_by.get(id(t), [])
        if any(isinstance(m, _EMBEDDINGS) for m in modules):
            shared = any(not isinstance(m, _EMBEDDINGS) for m in modules)
            roles[i] = TIED if shared else EMBEDDING
    found = [
        *((m, _role("classifier", how)) for m, how in _classifiers(params)),
        *((m, _role("stem", how)) for m, how in _stems(params)),
    ]
    for module, route in found:
        for t in module.parameters():
            i = index.get(id(t))
            if i is not None:
                roles.setdefault(i, route)
    return roles


def _role(role: str, how: str) -> Route:
    if how.startswith("'"):  # a torchvision attribute
        return _r(
            "adamw", f"{role} ({how})", f"the {role} (the last linear layer in the model's {how})"
        )
    if how == "first layer":
        return _r("adamw", role, f"the {role} (the model's first conv or linear layer)")
    return _r("adamw", f"{role} ({how})", f"the {role} (declared by {how})")


def _classifiers(params: ModelParams) -> list[tuple[nn.Module, str]]:
    """The classifier modules the model declares (timm), else torchvision's attribute names."""
    found = []
    for _, module in params.modules:
        found.extend(_timm_classifiers(module))
    if any(True for module, _ in found for _p in module.parameters()):
        return found
    root = params.model
    for name, child in root.named_children():
        if name in CLASSIFIER_ATTRIBUTES or name.endswith(("_head", "_classifier")):
            linears = [m for m in child.modules() if isinstance(m, nn.Linear)]
            if linears:
                found.append((linears[-1], f"'{name}'"))
    return found


def _timm_classifiers(module: nn.Module) -> list[tuple[nn.Module, str]]:
    """What ``get_classifier()`` returns, else the modules ``pretrained_cfg['classifier']`` or
    ``default_cfg['classifier']`` names."""
    if callable(getattr(type(module), "get_classifier", None)):
        try:
            head = module.get_classifier()
        except TypeError:  # not timm's: it takes arguments
            head = None
        heads = head if isinstance(head, tuple | list) else [head]
        modules = [h for h in heads if isinstance(h, nn.Module)]
        if modules:
            return [(m, "get_classifier()") for m in modules]
    for key in ("pretrained_cfg", "default_cfg"):
        modules = _submodules(module, _timm_cfg(module, key).get("classifier"))
        if modules:
            return [(m, f"{key}['classifier']") for m in modules]
    return []


def _stems(params: ModelParams) -> list[tuple[nn.Module, str]]:
    """The stem: ``pretrained_cfg['first_conv']`` where declared, else the first conv or linear
    layer (none when the first layer is an embedding: the embedding sees the input)."""
    found = []
    for _, module in params.modules:
        for key in ("pretrained_cfg", "default_cfg"):
            modules = _submodules(module, _timm_cfg(module, key).get("first_conv"))
            if modules:
                found.extend((m, f"{key}['first_conv']") for m in modules)
                break
    if found:
        return found
    layers = (nn.Linear, _CONV, *_EMBEDDINGS)
    first = next((m for _, m in params.modules if isinstance(m, layers)), None)
    return [] if first is None or isinstance(first, _EMBEDDINGS) else [(first, "first layer")]


def _timm_cfg(module: nn.Module, key: str) -> Mapping[str, Any]:
    """timm's ``pretrained_cfg`` / ``default_cfg`` of `module`, or {} (read without
    nn.Module.__getattr__, which is slow for missing attributes)."""
    cfg = module.__dict__.get(key)
    if cfg is None and isinstance(getattr(type(module), key, None), property):
        cfg = getattr(module, key)
    return cfg if isinstance(cfg, Mapping) else {}


def _submodules(module: nn.Module, names: Any) -> list[nn.Module]:
    """The submodules of `module` that `names` (a name or a list of names) name, if all exist."""
    if not names:
        return []
    names = [names] if isinstance(names, str) else list(names)
    try:
        return [module.get_submodule(str(n)) for n in names]
    except AttributeError:  # a cfg that no longer fits the model (e.g. a replaced head)
        return []


@PARAM_GROUP_BUILDERS.register("muon")
def muon_param_groups(
    model: nn.Module,
    *,
    lr: float,
    weight_decay: float = 0.0,
    output_layers: Sequence[str] = OUTPUT_LAYER_NAMES,
    lookup_tables: Sequence[str] = LOOKUP_TABLE_NAMES,
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
        output_layers: module names (the last part of the name) of output layers the model does
            not declare (a detector's predictors).
        lookup_tables: name patterns (the last part of the name) of position tables and tokens
            the model does not declare in ``no_weight_decay()``.
        rules: further rules.
        fresh: names of parameters the initial checkpoint did not provide.
        merge_labels: merge groups with equal hyperparameters across labels.
    """
    params = collect_model_params(model)
    routes = muon_routes(params, output_layers, lookup_tables)

    def start(i: int) -> Iterable[tuple[str, str, Any]]:
        reason, route = routes[i].reason, routes[i].optimizer
        return [(reason, "group", route), (reason, "optimizer", route)]

    counts = {r: sum(1 for route in routes if route.optimizer == r) for r in OPTIMIZER_PARTS}
    return plan_param_groups(
        model,
        [*parse_rules(weight_decay_exemptions(), "muon"), *parse_rules(rules)],
        builder="muon",
        lr=lr,
        weight_decay=weight_decay,
        fresh=fresh,
        start=start,
        sources={r.reason: r.why for r in routes},
        notes=[f"routes: {counts['muon']} tensors to Muon, {counts['adamw']} to AdamW"],
        merge_labels=merge_labels,
        params=params,
    )
