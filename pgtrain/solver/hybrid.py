"""Muon + AdamW as one optimizer: groups go to the algorithm their ``optimizer`` key names.

Muon (``torch.optim.Muon``) orthogonalizes the momentum of 2-D weight matrices; embeddings,
output layers, the first conv and 1-D parameters keep AdamW. The ``muon`` param-group builder
(`pgtrain.param_groups.builders.muon`) decides each parameter's side and writes it into its group as
``optimizer``; `MuonAdamW` then hands each group to its algorithm. To the rest of pgtrain it is
one torch optimizer: ``param_groups`` (the same dicts the two algorithms hold, so the LR
scheduler, LR scaling and per-group logging act on both), ``state`` (each parameter's state, in
the algorithm that owns it, so the name-keyed checkpoint state and a resume after regrouping work
as for any optimizer), ``zero_grad``, ``step`` and a positional ``state_dict`` /
``load_state_dict`` as torch's. Routing fails closed: groups that leave a part without
parameters (those of a builder that does not route, e.g. ``default`` or ``layer_decay``) are an
error, as is loading a plain optimizer's state dict.
"""

import inspect
import math
from collections.abc import Iterator, MutableMapping
from typing import Any

import torch
from torch import Tensor

from pgtrain.errors import ConfigError
from pgtrain.param_groups.names import param_group_names
from pgtrain.param_groups.settings import OPTIMIZER_PARTS
from pgtrain.solver.newton_schulz import NS_DTYPES, orthogonalize, resolve_ns_dtype

__all__ = ["FlatMuon", "HybridOptimizer", "MuonAdamW", "PARTS"]

PARTS = OPTIMIZER_PARTS  # the parts param groups are routed to, declared with the groups


class FlatMuon(torch.optim.Muon):
    """torch's Muon, also for conv filters, with its Newton-Schulz in the device's fastest dtype.

    An N-D parameter (N > 2) is updated as the matrix ``(out_channels, in_channels x kernel)``,
    the flattening Muon's authors use for convs: the update runs on 2-D views of the parameter,
    its gradient and its momentum buffer, so the parameter keeps its shape. Muon's LR adjustment
    (``adjust_lr_fn``) sees the flattened shape. The orthogonalization runs in ``ns_dtype``
    (a group key): ``"auto"`` (the default) picks bf16 where the device multiplies bf16 matrices
    at least as fast as fp32 (as torch's Muon always does), else fp32 (an AVX2 CPU, where bf16
    is about 50x slower), and logs the choice; ``"bf16"`` gives torch's Muon to the bit.
    """

    def __init__(self, params: Any, *, ns_dtype: str = "auto", **kwargs: Any) -> None:
        if ns_dtype != "auto" and ns_dtype not in NS_DTYPES:
            raise ConfigError(
                f"ns_dtype={ns_dtype!r} is not a dtype; use 'auto' or one of {list(NS_DTYPES)}"
            )
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
            group.setdefault("ns_dtype", original.get("ns_dtype", ns_dtype))
        self.defaults["ns_dtype"] = ns_dtype

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:
        """One Muon step per group: momentum (Nesterov's, by default), the update orthogonalized
        in the group's ``ns_dtype``, scaled by the shape's LR adjustment, decoupled weight
        decay."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params: list[Tensor] = []
            grads: list[Tensor] = []
            buffers: list[Tensor] = []
            self._init_group(group, params, grads, buffers)
            if not params:
                continue
            dtype = resolve_ns_dtype(group.get("ns_dtype", "auto"), params[0].device)
            lr, momentum = float(group["lr"]), group["momentum"]
            for param, grad, buffer in zip(params, grads, buffers, strict=True):
                buffer.lerp_(grad, 1 - momentum)
                update = grad.lerp(buffer, momentum) if group["nesterov"] else buffer
                update = orthogonalize(
                    update, group["ns_coefficients"], group["ns_steps"], group["eps"], dtype
                )
                param.mul_(1 - lr * group["weight_decay"])
                param.add_(update, alpha=-_shape_lr(lr, group["adjust_lr_fn"], param.shape))
        return loss

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


def _shape_lr(lr: float, rule: str | None, shape: torch.Size) -> float:
    """Muon's LR for a matrix of `shape` (rows A, columns B): ``original`` (Keller Jordan's)
    ``sqrt(max(1, A / B))``, ``match_rms_adamw`` (Moonlight's) ``0.2 sqrt(max(A, B))``,
    ``spectral_unclamped`` ``sqrt(A / B)``, times `lr`."""
    rows, cols = shape[0], shape[1]
    if rule is None or rule == "original":
        return lr * math.sqrt(max(1.0, rows / cols))
    if rule == "match_rms_adamw":
        return lr * 0.2 * math.sqrt(max(rows, cols))
    if rule == "spectral_unclamped":
        return lr * math.sqrt(rows / cols)
    return lr


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

    Raises:
        ConfigError: a group names an unknown part, or a part gets no parameter.
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
        for name, group in zip(param_group_names(groups), groups, strict=True):
            part = group.setdefault("optimizer", default_part)
            if part not in parts:
                raise ConfigError(
                    f"param group '{name}' names optimizer '{part}'; this optimizer has the "
                    f"parts {list(parts)}"
                )
            by_part[part].append(group)
        _check_every_part_used(type(self).__name__, by_part, getattr(params, "record", None))
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
        """Loads a positional ``state_dict()`` of this optimizer (as torch's does).

        Each group's hyperparameters are written into the group dicts the parts share (so what the
        LR scheduler writes afterwards still reaches the parts), and each state goes to its part,
        normalized as that part's own ``load_state_dict`` would.

        Raises:
            ConfigError: the state dict is not a hybrid optimizer's (a plain AdamW's has no
                routes), or a group's algorithm differs from the saved one.
        """
        _check_saved_routes(self.param_groups, state_dict.get("param_groups", []))
        routed, groups = self.state, self.param_groups
        super().load_state_dict(state_dict)  # casts the state and copies the hyperparameters
        for held, loaded in zip(groups, self.param_groups, strict=True):
            held.update(loaded)  # the loaded dict holds the very same `params` list
        loaded_state, self.state, self.param_groups = self.state, routed, groups
        for optimizer in self.parts.values():
            optimizer.state.clear()
        for p, value in loaded_state.items():
            routed[p] = value
        for optimizer in self.parts.values():  # e.g. AdamW's own fix-ups of old states
            optimizer.__setstate__(optimizer.__getstate__())


def _check_every_part_used(
    owner: str, by_part: dict[str, list[dict[str, Any]]], record: Any
) -> None:
    """Refuses groups that leave a part without parameters: the hybrid would silently train the
    rest with one algorithm only (the usual cause: a builder that does not route)."""
    counts = {name: sum(len(g["params"]) for g in groups) for name, groups in by_part.items()}
    for name, count in counts.items():
        if count:
            continue
        builder = getattr(record, "builder", None)
        source = f"the param groups of builder '{builder}'" if builder else "the param groups"
        used = " and ".join(repr(n) for n, c in counts.items() if c) or "no part"
        fix = (
            f"route some with a rule such as dict(match='blocks.*', optimizer='{name}')"
            if builder == "muon"
            else "use optimizer.params.builder=muon, which routes each parameter, or route "
            f"parameters with rules such as dict(match='blocks.*', optimizer='{name}')"
        )
        raise ConfigError(
            f"{owner}: no parameter is routed to '{name}' ({source} put every parameter on "
            f"{used}), so this would train without {name}; {fix}"
        )


def _check_saved_routes(groups: list[dict[str, Any]], saved: list[dict[str, Any]]) -> None:
    """Refuses a positional state dict whose groups were not updated by the same algorithms."""
    names = param_group_names(groups)
    for i, (group, old) in enumerate(zip(groups, saved, strict=False)):
        name = names[i]
        if "optimizer" not in old:
            raise ConfigError(
                f"optimizer state: param group {i} of the state dict names no algorithm, so it "
                "was not saved by a hybrid optimizer (MuonAdamW); its state (e.g. AdamW's "
                "exp_avg) does not fit Muon: start the optimizer fresh, or load the checkpoint's "
                "name-keyed state with pgtrain.param_groups.load_optimizer_state_by_name"
            )
        if old["optimizer"] != group["optimizer"]:
            raise ConfigError(
                f"optimizer state: param group '{name}' was updated by {old['optimizer']} when "
                f"saved and is now updated by {group['optimizer']}; a positional state dict "
                "cannot move state between algorithms: load the name-keyed state with "
                "pgtrain.param_groups.load_optimizer_state_by_name, which starts moved "
                "parameters fresh"
            )


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
        ns_dtype: the dtype of Muon's Newton-Schulz iteration: ``"auto"`` (bf16 where the
            device multiplies bf16 matrices at least as fast as fp32, else fp32; logged),
            ``"bf16"`` (torch's Muon), ``"fp32"`` or ``"fp16"``.
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
        ns_dtype: str = "auto",
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
                "muon": (FlatMuon, {**_part_kwargs(torch.optim.Muon, muon), "ns_dtype": ns_dtype}),
                "adamw": (torch.optim.AdamW, _part_kwargs(torch.optim.AdamW, adamw)),
            },
            default_part="adamw",
        )
