"""Compiled training: ``torch.compile`` of the model and, separately, of the optimizer step.

The optimizer step compiles once for all groups. A schedule changes every group's LR at every
step; a Python float LR that Dynamo takes as a constant (``specialize_float``, or a float it
first saw as one) recompiles the step for each new value. `compile_optimizer_step` makes each
group's LR a 0-d tensor, which the LR scheduler and the batch-size scaling update in place
(``fill_``), so the step compiles in the first iterations (until the optimizer's state exists;
the first call's time is logged) and not again. ``train.compile`` chooses what is compiled::

    train.compile.model=True train.compile.optimizer=True train.compile.backend=inductor
"""

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

from pgtrain.config.schema import setting
from pgtrain.errors import ConfigError
from pgtrain.param_groups.names import param_group_names
from pgtrain.utils.suggest import listing

__all__ = ["CompileSettings", "compile_model", "compile_optimizer_step", "compile_for_training"]

logger = logging.getLogger(__name__)


@dataclass
class CompileSettings:
    """``train.compile``: torch.compile of the model and, separately, of the optimizer step."""

    model: bool = setting(False, "compile the model (its first forward's time is logged)")
    optimizer: bool = setting(
        False, "compile the optimizer step, one graph for all groups (their LRs become tensors)"
    )
    backend: str = setting("inductor", "torch.compile's backend ('inductor', 'eager', ...)")
    mode: Literal["default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"] | (
        None
    ) = setting(None, "torch.compile's mode", null="use torch's default")


def compile_for_training(
    model: nn.Module, optimizer: torch.optim.Optimizer, options: Mapping[str, Any] | None
) -> nn.Module:
    """Applies ``train.compile`` (`options`): returns the module to train (compiled or not);
    compiles `optimizer`'s step in place."""
    options = dict(options or {})
    unknown = set(options) - {"model", "optimizer", "backend", "mode"}
    if unknown:
        raise ConfigError(
            f"train.compile has no {sorted(unknown)}; its keys are model, optimizer, backend, mode"
        )
    backend, mode = options.get("backend", "inductor"), options.get("mode")
    if options.get("model"):
        model = compile_model(model, backend=backend, mode=mode)
    if options.get("optimizer"):
        compile_optimizer_step(optimizer, backend=backend, mode=mode)
    return model


def compile_model(
    model: nn.Module, *, backend: str = "inductor", mode: str | None = None
) -> nn.Module:
    """``torch.compile(model)``; the first forward's time (which includes compiling) is logged."""
    compiled = torch.compile(model, backend=backend, mode=mode)
    started: list[float] = []

    def before(module: nn.Module, args: Any) -> None:
        started.append(time.perf_counter())

    def after(module: nn.Module, args: Any, output: Any) -> None:
        logger.info("Compiled the model's forward in %.1f s (its first call)", _since(started))
        first.remove()
        last.remove()

    first = compiled.register_forward_pre_hook(before)
    last = compiled.register_forward_hook(after)
    return compiled


def compile_optimizer_step(
    optimizer: torch.optim.Optimizer, *, backend: str = "inductor", mode: str | None = None
) -> None:
    """Compiles ``optimizer.step`` for all its groups, with their LRs as 0-d tensors."""
    unfused = []
    for i, group in enumerate(optimizer.param_groups):
        if not isinstance(group["lr"], torch.Tensor):
            group["lr"] = torch.tensor(float(group["lr"]))
        if group.get("foreach") and group.get("capturable") is False:
            # Adam's foreach kernels refuse a tensor LR unless capturable; compiled, the
            # per-tensor loop is fused by the compiler instead (torch's own foreach=None choice).
            group["foreach"] = False
            unfused.append(param_group_names(optimizer.param_groups)[i])
    if unfused:
        logger.info(
            "train.compile.optimizer: %d group(s) with foreach=True run the per-tensor step, "
            "which the compiler fuses (a tensor LR needs it): %s",
            len(unfused),
            listing(unfused, 5),
        )
    original = optimizer.step
    step = torch.compile(original, backend=backend, mode=mode)
    what = f"the optimizer step ({len(optimizer.param_groups)} groups)"
    optimizer.step = _timed_first_call(step, what)
    if hasattr(original, "_wrapped_by_lr_sched"):
        # The LR scheduler's counting wrapper is inside the compiled step: say it is still there.
        optimizer.step._wrapped_by_lr_sched = True


def _since(started: list[float]) -> float:
    return time.perf_counter() - started[0]


def _timed_first_call(fn: Callable[..., Any], what: str) -> Callable[..., Any]:
    done = False

    def call(*args: Any, **kwargs: Any) -> Any:
        nonlocal done
        if done:
            return fn(*args, **kwargs)
        start = time.perf_counter()
        out = fn(*args, **kwargs)
        done = True
        logger.info("Compiled %s in %.1f s (its first call)", what, time.perf_counter() - start)
        return out

    return call
