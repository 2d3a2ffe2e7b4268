"""The run's strategy: one process, DDP (replicated weights) or FSDP2 (sharded weights).

``train.strategy`` chooses, `Strategy.from_train` reads it once, and the run carries the object
(``run.strategy``, ``trainer.strategy``). Everything that behaves differently under a strategy asks
it: wrapping the model, skipping the gradient sync of accumulation steps, unwrapping, whether the
model is sharded (evaluation in lockstep, EMA), how to read a full value from a shard, the
checkpoint format, the process-group backend and its timeouts. No module probes the model.

FSDP2's ``fully_shard`` swaps each parameter for a sharded DTensor of the same name and global
shape, so the param groups are built by name on the sharded model exactly as on one process.
"""

import contextlib
import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Literal

import torch
from torch import nn

from pgtrain.config.schema import section, setting
from pgtrain.engine.processes.launch import default_timeout
from pgtrain.engine.strategy.ddp import DDPSettings, create_ddp_model
from pgtrain.engine.strategy.fsdp import FSDPSettings, shard_model
from pgtrain.errors import ConfigError
from pgtrain.utils import comm, sharding
from pgtrain.utils.checks import is_real
from pgtrain.utils.suggest import did_you_mean

__all__ = ["STRATEGIES", "ParallelSettings", "Strategy"]

logger = logging.getLogger(__name__)

STRATEGIES = ("ddp", "fsdp")
_FORMATS = ("auto", "file", "sharded")
_MAX_STALL_S = 60.0


@dataclass
class ParallelSettings:
    """How the processes share the model: replicated (DDP) or sharded (FSDP2)."""

    strategy: Literal["ddp", "fsdp"] = setting(
        "ddp", "'ddp' replicates the model; 'fsdp' shards parameters, gradients, optimizer state"
    )
    ddp: DDPSettings = section(DDPSettings, "DistributedDataParallel's options")
    fsdp: FSDPSettings = section(FSDPSettings, "FSDP2's options")


@dataclass
class Strategy:
    """How the run's processes share the model, decided once from the ``train`` section.

    Attributes:
        name: ``"ddp"`` or ``"fsdp"`` (``train.strategy``); in one process DDP wraps nothing.
        options: ``train.ddp`` or ``train.fsdp``, whichever `name` uses.
        checkpoint_format: ``train.checkpoint.format``: "auto", "file" or "sharded".
        dist_timeout_s: ``train.dist_timeout_s`` (None: torch's default for the backend).
        sharded: whether `wrap` sharded the model (FSDP with a process group): its parameters
            are shards, evaluation runs in lockstep, and no process holds the whole model.
    """

    name: str = "ddp"
    options: Mapping[str, Any] = field(default_factory=dict)
    checkpoint_format: str = "auto"
    dist_timeout_s: float | None = None
    sharded: bool = False

    @classmethod
    def from_train(cls, train: Mapping[str, Any]) -> "Strategy":
        """The strategy ``train`` describes, checked.

        Raises:
            ConfigError: an unknown strategy or checkpoint format, "file" under FSDP, or a
                collective timeout that is not a positive number of seconds.
        """
        name = train.get("strategy", "ddp")
        if name not in STRATEGIES:
            raise ConfigError(
                f"train.strategy={name!r} is not a strategy"
                f"{did_you_mean(str(name), STRATEGIES)}; use one of {list(STRATEGIES)}"
            )
        fmt = (train.get("checkpoint") or {}).get("format", "auto")
        if fmt not in _FORMATS:
            raise ConfigError(
                f"train.checkpoint.format={fmt!r} is not a format"
                f"{did_you_mean(str(fmt), _FORMATS)}; use one of {list(_FORMATS)}"
            )
        if fmt == "file" and name == "fsdp":
            raise ConfigError(
                "train.checkpoint.format=file cannot save an FSDP run (no process holds the whole "
                "model); use 'auto' and make a single file afterwards with "
                "tools/convert_checkpoint.py"
            )
        timeout = train.get("dist_timeout_s")
        if timeout is not None and not is_real(timeout, above=0):
            raise ConfigError(
                f"train.dist_timeout_s={timeout!r} must be a positive number of seconds"
            )
        options = dict(train.get(name) or {})
        return cls(name, options, fmt, None if timeout is None else float(timeout))

    # ----- the model -----

    def wrap(self, model: nn.Module) -> nn.Module:
        """Applies the strategy to `model` (weights loaded, on its device); returns the module to
        train. DDP wraps it when there is more than one process; FSDP shards it in place whenever
        a process group exists, one process included (its mixed precision still applies).

        Raises:
            ConfigError: an FSDP option that does not fit the model.
        """
        if self.name == "ddp":
            return create_ddp_model(model, **self.options)
        if not torch.distributed.is_initialized():
            logger.info("train.strategy=fsdp in one process without a process group: not sharded")
            return model
        self.sharded = True
        return shard_model(model, **self.options)

    def rewrap(self, model: nn.Module) -> nn.Module:
        """Returns the module to train after the set of parameters that require gradients changed
        (gradual unfreezing). DDP registers that set when it wraps, so a DDP model is wrapped
        anew (inside the same ``torch.compile`` wrapper, if any), without the broadcast of the
        first wrap: the replicas are already equal. A sharded model is itself: FSDP2 reads each
        shard's ``requires_grad`` at every all-gather and reduces only existing gradients."""
        compiled = model if type(model).__name__ == "OptimizedModule" else None
        inner = compiled._orig_mod if compiled is not None else model
        if not isinstance(inner, torch.nn.parallel.DistributedDataParallel):
            return model
        ddp = create_ddp_model(inner.module, init_sync=False, **self.options)
        params = list(inner.module.parameters())
        logger.info(
            "DDP wrapped anew%s: %d of %d parameter tensors reduce gradients now",
            " inside torch.compile's wrapper" if compiled is not None else "",
            sum(p.requires_grad for p in params),
            len(params),
        )
        # The same compiled wrapper type and compile settings around the new DDP module.
        return ddp if compiled is None else type(compiled)(ddp, compiled.dynamo_ctx)

    @staticmethod
    def unwrap(model: nn.Module) -> nn.Module:
        """The model inside DDP and ``torch.compile`` wrappers (a sharded model is itself)."""
        return comm.unwrap_model(model)

    def no_sync(self, model: nn.Module) -> contextlib.AbstractContextManager[Any]:
        """A context in which backward passes skip the gradient reduction (all micro-batches of
        an accumulation step but the last), so each step communicates once."""
        if self.sharded:
            return _without_gradient_sync(comm.unwrap_model(model))
        while type(model).__name__ == "OptimizedModule":  # torch.compile's wrapper
            model = model._orig_mod
        if isinstance(model, torch.nn.parallel.DistributedDataParallel):
            return model.no_sync()
        return contextlib.nullcontext()

    @property
    def lockstep_eval(self) -> bool:
        """Whether evaluation must run the same number of forwards on every process: a sharded
        model gathers its parameters in each forward, with all processes together."""
        return self.sharded and comm.get_world_size() > 1

    # ----- values and checkpoints -----

    @staticmethod
    def full_value(value: torch.Tensor | float) -> float:
        """The float of a one-element tensor, reduced over the processes when it is a shard."""
        return sharding.full_value(value)

    @property
    def sharded_checkpoints(self) -> bool:
        """Whether the run saves sharded checkpoints: format "sharded", or "auto" under FSDP
        (each process writes its shards; no process gathers the whole model)."""
        return self.checkpoint_format == "sharded" or (
            self.checkpoint_format == "auto" and self.name == "fsdp"
        )

    # ----- processes -----

    @staticmethod
    def backend(num_gpus: int) -> str:
        """The process-group backend: NCCL for GPU processes, gloo for CPU ones."""
        return "nccl" if num_gpus else "gloo"

    def timeout(self, backend: str) -> timedelta:
        """How long a collective waits for the other ranks: ``train.dist_timeout_s`` or torch's
        default for `backend`."""
        if self.dist_timeout_s is None:
            return default_timeout(backend)
        return timedelta(seconds=self.dist_timeout_s)

    def stall_timeout(self) -> float:
        """Seconds of silence after which the stall watchdog names a rank: at most half the
        collective timeout, so the stall is reported before a collective fails, at most 60 s."""
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        return min(_MAX_STALL_S, self.timeout(backend).total_seconds() / 2)


@contextlib.contextmanager
def _without_gradient_sync(model: Any) -> Iterator[None]:
    model.set_requires_gradient_sync(False)
    try:
        yield
    finally:
        model.set_requires_gradient_sync(True)
