"""Muon + AdamW as one optimizer: groups go to the algorithm their ``optimizer`` key names.

Muon (``torch.optim.Muon``) orthogonalizes the momentum of 2-D weight matrices; embeddings,
output layers, the first conv and 1-D parameters keep AdamW. The ``muon`` param-group builder
(`pgtrain.param_groups.muon`) decides each parameter's side and writes it into its group as
``optimizer``; `MuonAdamW` then hands each group to its algorithm. To the rest of pgtrain it is
one torch optimizer: ``param_groups`` (the same dicts the two algorithms hold, so the LR
scheduler, LR scaling and per-group logging act on both), ``state`` (each parameter's state, in
the algorithm that owns it, so the name-keyed checkpoint state and a resume after regrouping work
as for any optimizer), ``zero_grad`` and ``step``.
"""

import inspect
from collections.abc import Iterator, MutableMapping
from typing import Any

import torch
from torch import Tensor

from pgtrain.errors import ConfigError

__all__ = ["FlatMuon", "HybridOptimizer", "MuonAdamW", "PARTS"]

PARTS = ("muon", "adamw")


class FlatMuon(torch.optim.Muon):
    """torch's Muon, also for conv filters: an N-D parameter (N > 2) is updated as the matrix
    ``(out_channels, in_channels x kernel)``, the flattening Muon's authors use for convs.

    The update runs on 2-D views of the parameter, its gradient and its momentum buffer, so the
    parameter keeps its shape and the arithmetic is torch's own. Muon's LR adjustment
    (``adjust_lr_fn``) sees the flattened shape.
    """

    def __init__(self, params: Any, **kwargs: Any) -> None:
        # torch's Muon refuses non-2-D parameters in __init__: build through a 2-D-only view of
        # the check, then admit the N-D ones.
        groups = _as_groups(params)
        for group in groups:
            for p in group["params"]:
                if p.ndim < 2:
                    raise ConfigError(
                        f"Muon updates matrices and conv filters; got a {p.ndim}-D parameter "
                        f"of shape {tuple(p.shape)} (route it to AdamW)"
                    )
        flat = [{**g, "params": [_matrix(p.detach()) for p in g["params"]]} for g in groups]
        super().__init__(flat, **kwargs)
        # The checks passed on the 2-D views; the groups now hold the parameters themselves.
        for group, original in zip(self.param_groups, groups, strict=True):
            group["params"] = list(original["params"])

    def _init_group(
        self,
        group: MutableMapping,
        params_with_grad: list[Tensor],
        grads: list[Tensor],
        muon_momentum_bufs: list[Tensor],
    ) -> bool:
        for p in group["params"]:
            if p.grad is None:
                continue
            state = self.state[p]
            if "momentum_buffer" not in state:
                state["momentum_buffer"] = torch.zeros_like(
                    p, memory_format=torch.contiguous_format
                )
            params_with_grad.append(_matrix(p))
            grads.append(_matrix(p.grad))
            muon_momentum_bufs.append(_matrix(state["momentum_buffer"]))
        return False


def _matrix(t: Tensor) -> Tensor:
    """`t` as a 2-D view (first dimension kept), or `t` itself when it already is 2-D."""
    return t if t.ndim == 2 else t.view(t.shape[0], -1)


def _as_groups(params: Any) -> list[dict[str, Any]]:
    params = list(params)
    if params and not isinstance(params[0], dict):
        return [{"params": params}]
    return [dict(g, params=list(g["params"])) for g in params]


class _RoutedState(MutableMapping):
    """The state of each parameter, kept by the optimizer that updates it."""

    def __init__(self, owner_of: dict[int, torch.optim.Optimizer]) -> None:
        self._owner_of = owner_of

    def _owner(self, p: Tensor) -> torch.optim.Optimizer:
        try:
            return self._owner_of[id(p)]
        except KeyError:
            raise KeyError(p) from None

    def __getitem__(self, p: Tensor) -> Any:
        return self._owner(p).state[p]

    def __setitem__(self, p: Tensor, value: Any) -> None:
        self._owner(p).state[p] = value

    def __delitem__(self, p: Tensor) -> None:
        del self._owner(p).state[p]

    def __iter__(self) -> Iterator[Tensor]:
        seen = set()
        for optimizer in dict.fromkeys(self._owner_of.values()):
            for p in optimizer.state:
                if id(p) not in seen:
                    seen.add(id(p))
                    yield p

    def __len__(self) -> int:
        return sum(1 for _ in self)

    def __contains__(self, p: object) -> bool:
        owner = self._owner_of.get(id(p))
        return owner is not None and p in owner.state


class HybridOptimizer(torch.optim.Optimizer):
    """Several torch optimizers behind one: a group goes to the part its ``optimizer`` key names.

    Args:
        params: param groups, each with an ``optimizer`` key naming a part (groups without one go
            to `default_part`).
        parts: part name -> ``(optimizer class, keyword arguments)``.
        default_part: the part of groups that name none.
    """

    def __init__(
        self,
        params: Any,
        parts: dict[str, tuple[type, dict[str, Any]]],
        *,
        default_part: str,
    ) -> None:
        groups = list(params)
        if groups and not isinstance(groups[0], dict):
            groups = [{"params": groups}]
        by_part: dict[str, list[dict[str, Any]]] = {name: [] for name in parts}
        for group in groups:
            part = group.setdefault("optimizer", default_part)
            if part not in parts:
                name = group.get("name", "?")
                raise ConfigError(
                    f"param group '{name}' names optimizer '{part}'; this optimizer has the "
                    f"parts {list(parts)}"
                )
            by_part[part].append(group)
        # Each part holds the very group dicts of this optimizer, so what the LR scheduler
        # writes into `param_groups` is what the parts use.
        self.parts: dict[str, torch.optim.Optimizer] = {}
        for name, (cls, kwargs) in parts.items():
            if by_part[name]:
                self.parts[name] = cls(by_part[name], **kwargs)
        self._keep_group_dicts(by_part)
        self._routing = False  # torch's __init__ adds the groups to this optimizer only
        super().__init__(groups, {})
        self._routing = True
        owner_of = {
            id(p): opt for opt in self.parts.values() for g in opt.param_groups for p in g["params"]
        }
        self.state = _RoutedState(owner_of)  # type: ignore[assignment]

    def _keep_group_dicts(self, by_part: dict[str, list[dict[str, Any]]]) -> None:
        for name, optimizer in self.parts.items():
            for held, given in zip(optimizer.param_groups, by_part[name], strict=True):
                if held is not given:  # a part copied the dict: share one
                    given.update(held)
            optimizer.param_groups[:] = by_part[name]

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:
        """Steps every part (a closure is evaluated once, before)."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for optimizer in self.parts.values():
            optimizer.step()
        return loss

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Adds a group to this optimizer and to its part (``optimizer`` key)."""
        if not getattr(self, "_routing", False):  # torch's __init__, for the initial groups
            super().add_param_group(param_group)
            return
        part = param_group.get("optimizer")
        if part not in self.parts:
            raise ConfigError(
                f"add_param_group: the group's 'optimizer' must be one of {list(self.parts)}"
            )
        self.parts[part].add_param_group(param_group)
        super().add_param_group(param_group)
        for p in param_group["params"]:
            self.state._owner_of[id(p)] = self.parts[part]  # type: ignore[attr-defined]

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Loads a positional ``state_dict()`` (as torch's); each state goes to its part."""
        routed = self.state
        super().load_state_dict(state_dict)
        loaded, self.state = self.state, routed  # type: ignore[assignment]
        for p, value in loaded.items():
            routed[p] = value


def _part_kwargs(cls: type, values: dict[str, Any]) -> dict[str, Any]:
    """The entries of `values` that `cls` takes (None entries left to its defaults)."""
    accepted = inspect.signature(cls.__init__).parameters
    return {k: v for k, v in values.items() if k in accepted and v is not None}


class MuonAdamW(HybridOptimizer):
    """Muon for hidden matrices and conv filters, AdamW for the rest, as one optimizer.

    Use it with the ``muon`` param-group builder, which routes each parameter
    (``configs/common/optim.py``: ``MuonAdamW``). Each group's ``lr`` and ``weight_decay`` come
    from the builder; the options below are the two algorithms' defaults for the rest.

    Args:
        params: param groups with an ``optimizer`` key, ``muon`` or ``adamw``.
        lr: the base LR (the builder's groups carry their own).
        weight_decay: the base weight decay.
        momentum, nesterov, ns_steps: Muon's.
        adjust_lr_fn: Muon's LR adjustment to each matrix's shape: ``match_rms_adamw`` (the
            default here: Moonlight's ``0.2 * sqrt(max(A, B))``, so one LR suits both parts),
            ``original`` (Keller Jordan's ``sqrt(max(1, A / B))``, with a Muon LR about 0.02) or
            ``spectral_unclamped``.
        betas, eps: AdamW's.
    """

    def __init__(
        self,
        params: Any,
        lr: float = 1e-3,
        weight_decay: float = 0.1,
        *,
        momentum: float = 0.95,
        nesterov: bool = True,
        ns_steps: int = 5,
        adjust_lr_fn: str | None = "match_rms_adamw",
        betas: tuple[float, float] = (0.9, 0.95),
        eps: float = 1e-8,
    ) -> None:
        shared = {"lr": lr, "weight_decay": weight_decay}
        muon = {
            **shared,
            "momentum": momentum,
            "nesterov": nesterov,
            "ns_steps": ns_steps,
            "adjust_lr_fn": adjust_lr_fn,
        }
        adamw = {**shared, "betas": tuple(betas), "eps": eps}
        super().__init__(
            params,
            {
                "muon": (FlatMuon, _part_kwargs(torch.optim.Muon, muon)),
                "adamw": (torch.optim.AdamW, _part_kwargs(torch.optim.AdamW, adamw)),
            },
            default_part="adamw",
        )
