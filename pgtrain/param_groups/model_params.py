"""An inventory of a model's parameters: names, owners, tied aliases and weight-decay hints."""

from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cached_property
from itertools import compress, count, repeat

import torch
from torch import nn

from pgtrain.errors import ConfigError

__all__ = ["ModelParams", "collect_model_params"]


@dataclass
class ModelParams:
    """Every parameter of a model once, in ``named_parameters()`` order, with what rules look at.

    Attributes:
        model: the model the parameters belong to.
        names: the canonical (first) name of each parameter.
        tensors: the parameters, aligned with `names`.
        owners: the module that registers each parameter (its direct owner).
        aliases: for a shared or tied parameter, its other names, keyed by index into `names`.
        modules: every module once with its name, in ``named_modules()`` order.
    """

    model: nn.Module
    names: list[str] = field(default_factory=list)
    tensors: list[torch.Tensor] = field(default_factory=list)
    owners: list[nn.Module] = field(default_factory=list)
    aliases: dict[int, list[str]] = field(default_factory=dict)
    modules: list[tuple[str, nn.Module]] = field(default_factory=list)

    @cached_property
    def index_of_tensor(self) -> dict[int, int]:
        """Maps ``id(tensor)`` to its index, for finding a group's tensors in the model."""
        return {id(t): i for i, t in enumerate(self.tensors)}

    @cached_property
    def index_of_name(self) -> dict[str, int]:
        """Maps every name, aliases included, to the index of its parameter."""
        index = {n: i for i, n in enumerate(self.names)}
        for i, extra in self.aliases.items():
            for name in extra:
                index[name] = i
        return index

    @cached_property
    def all_names(self) -> list[str]:
        """Every name, aliases included, for did-you-mean suggestions."""
        return [*self.names, *(a for extra in self.aliases.values() for a in extra)]

    @cached_property
    def no_weight_decay_hints(self) -> list[str]:
        """Full names declared by ``no_weight_decay()`` of the model or any submodule (timm-style).

        A submodule's hint is prefixed with the submodule's name, so a ViT inside
        ``backbone.net`` that declares ``{"pos_embed"}`` yields ``backbone.net.pos_embed``.
        """
        hints: list[str] = []
        declares: dict[type, bool] = {}  # a model has few module classes and many modules
        for prefix, module in self.modules:
            # Looked up on the class: nn.Module.__getattr__ is slow for missing attributes.
            cls = type(module)
            found = declares.get(cls)
            if found is None:
                found = declares[cls] = callable(getattr(cls, "no_weight_decay", None))
            if not found:
                continue
            try:
                declared = module.no_weight_decay()
            except TypeError as e:
                raise ConfigError(
                    f"{type(module).__name__}.no_weight_decay() at '{prefix or '<model>'}' must "
                    f"take no arguments and return parameter names: {e}"
                ) from e
            hints.extend(_prefixed(prefix, declared))
        return list(dict.fromkeys(hints))

    @cached_property
    def hint_matches(self) -> dict[str, set[int]]:
        """Maps each ``no_weight_decay()`` hint to the parameters it names (empty if none).

        A hint names the parameter of that name (an alias counts) or every parameter of the
        module of that name.
        """
        matches = {}
        for hint in self.no_weight_decay_hints:
            index = self.index_of_name.get(hint)
            if index is not None:
                matches[hint] = {index}
            else:  # the indices of the names under the module `hint`, found in C
                under = map(str.startswith, self.names, repeat(hint + "."))
                matches[hint] = set(compress(count(), under))
        return matches

    @cached_property
    def hinted_indices(self) -> set[int]:
        """Returns the indices of every parameter some ``no_weight_decay()`` hint names."""
        return set().union(*self.hint_matches.values())


def collect_model_params(model: nn.Module) -> ModelParams:
    """Lists every parameter of `model` once, with its owner module and any tied aliases.

    The order is that of ``model.named_parameters()``; a tensor registered under several names
    (shared modules, tied weights) keeps its first name, and the others become aliases.
    """
    if not isinstance(model, nn.Module):
        raise ConfigError(
            f"param groups need an nn.Module, got {type(model).__name__}; bind the model at run "
            "time (cfg.optimizer.params.model = model)"
        )
    params = ModelParams(model)
    names, tensors, owners, aliases = params.names, params.tensors, params.owners, params.aliases
    index_of_id: dict[int, int] = {}
    seen_modules: set[int] = set()

    def visit(prefix: str, module: nn.Module) -> None:
        """`module` and its submodules, once per path (a shared module once for each name it
        has), in ``named_modules()``'s order; read from ``_parameters`` and ``_modules``, which
        is what ``named_parameters()`` reads, without its generator chain per module (which
        costs more than the rest of a build)."""
        if id(module) not in seen_modules:
            seen_modules.add(id(module))
            params.modules.append((prefix, module))
        for local, tensor in module._parameters.items():
            if tensor is None:
                continue
            name = f"{prefix}.{local}" if prefix else local
            index = index_of_id.get(id(tensor))
            if index is not None:
                if name != names[index]:
                    aliases.setdefault(index, []).append(name)
                continue
            index_of_id[id(tensor)] = len(names)
            names.append(name)
            tensors.append(tensor)
            owners.append(module)
        dot = f"{prefix}." if prefix else ""
        for local, child in module._modules.items():
            if child is not None:
                visit(dot + local, child)

    visit("", model)
    params.__dict__["index_of_tensor"] = index_of_id  # the cached property, already built
    for index, extra in aliases.items():
        # A shared module is visited once per path, so the same alias can repeat.
        aliases[index] = list(dict.fromkeys(extra))
    return params


def _prefixed(prefix: str, declared: Iterable[str]) -> list[str]:
    if isinstance(declared, str):
        declared = [declared]
    return [f"{prefix}.{name}" if prefix else str(name) for name in declared]
