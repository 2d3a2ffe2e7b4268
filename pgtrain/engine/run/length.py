"""The length of a run in iterations, given in iterations or in epochs of the train dataset.

``train.max_iter`` counts optimizer steps. ``train.epochs`` is the alternative (exactly one of
the two is set): an epoch is ``ceil(dataset length / effective batch)`` iterations, where the
effective batch is the per-process batch x processes x accumulation steps, the samples one
optimizer step sees. Periods (``train.eval_period``, ``train.checkpoint.period``) are
iterations, or epochs written ``"2ep"``. Schedules with ``unit="epoch"`` take the same epoch
length (``train.iters_per_epoch``, set here from the dataset).
"""

import math
import re
from dataclasses import dataclass
from typing import Any

from pgtrain.config.schema import setting
from pgtrain.errors import ConfigError

__all__ = [
    "RunLength",
    "RunLengthSettings",
    "check_run_length",
    "iterations_of",
    "needs_epoch_length",
    "period_problem",
    "period_setting",
]

_EPOCHS = re.compile(r"^\s*(?P<n>\d+(?:\.\d+)?)\s*ep(?:och)?s?\s*$")
# The periods that may be given in epochs, as paths under `train`.
PERIOD_KEYS = ("eval_period", "checkpoint.period")
# What a period may be, for messages and the settings reference.
PERIOD = "a whole number of iterations >= {least}, or epochs > 0 written like '2ep'"


def period_problem(value: Any, least: int) -> str | None:
    """None when `value` is a period: a whole number of iterations >= `least` or epochs > 0
    written ``"2ep"``; else what it must be (for a message)."""
    if isinstance(value, str):
        match = _EPOCHS.match(value)
        fine = match is not None and float(match["n"]) > 0  # "0ep" would mean every step
    else:
        fine = isinstance(value, int) and not isinstance(value, bool) and value >= least
    return None if fine else PERIOD.format(least=least)


def period_setting(default: int, doc: str, least: int) -> Any:
    """Declares a period setting (``int | str``): iterations (at least `least`) or epochs
    written ``"2ep"``; see `pgtrain.config.schema.setting`."""
    return setting(
        default,
        doc,
        check=lambda value: period_problem(value, least),
        expects=PERIOD.format(least=least),
    )


@dataclass
class RunLengthSettings:
    """The run's length: ``train.max_iter`` optimizer steps or ``train.epochs`` passes."""

    max_iter: int | None = setting(
        1000, "optimizer steps to train", ge=1, null="train by train.epochs"
    )
    epochs: float | None = setting(
        None, "passes over the train dataset to train", gt=0, null="train by train.max_iter"
    )
    iters_per_epoch: int | None = setting(
        None,
        "set by the run from the train dataset's length and the batch; not a setting",
        check=lambda value: "null: the run sets it from the train dataset",
        expects="null (the run sets it)",
    )


def check_run_length(train: Any) -> None:
    """Checks that exactly one of ``train.max_iter`` and ``train.epochs`` is set (their values
    are checked by `RunLengthSettings`).

    Raises:
        ConfigError: Naming the key(s) and what to write instead.
    """
    max_iter, epochs = train.get("max_iter"), train.get("epochs")
    if max_iter is not None and epochs is not None:
        raise ConfigError(
            f"train.max_iter={max_iter} and train.epochs={epochs:g} are both set, and the run's "
            "length comes from one of them: add train.max_iter=null to train by epochs (or "
            "train.epochs=null to train by iterations)"
        )
    if max_iter is None and epochs is None:
        raise ConfigError("set train.max_iter (iterations) or train.epochs (train dataset passes)")


def needs_epoch_length(cfg: Any) -> bool:
    """Whether building the run needs the train dataset's epoch length: ``train.epochs``, a
    period or an unfreezing stage in epochs, or a schedule with ``unit="epoch"`` (the loader is
    built then)."""
    train = cfg.get("train") or {}
    if train.get("epochs") is not None:
        return True
    if any(isinstance(_get(train, key), str) for key in PERIOD_KEYS):
        return True
    stages = _get(train, "unfreeze.stages") or ()
    if any(
        isinstance(v, str) for stage in stages if hasattr(stage, "values") for v in stage.values()
    ):
        return True  # gradual unfreezing at "1ep"
    return _mentions_epoch_unit(cfg.get("lr_scheduler"))


def _mentions_epoch_unit(node: Any) -> bool:
    if hasattr(node, "items"):
        return any(
            (k == "unit" and v == "epoch") or _mentions_epoch_unit(v) for k, v in node.items()
        )
    if isinstance(node, list | tuple) or type(node).__name__ == "ListConfig":
        return any(_mentions_epoch_unit(v) for v in node)
    return False


def iterations_of(value: Any, key: str, iters_per_epoch: int | None) -> Any:
    """Returns a period as iterations: a number stays; ``"2ep"`` is 2 x `iters_per_epoch`."""
    if not isinstance(value, str):
        return value
    match = _EPOCHS.match(value)
    if match is None or iters_per_epoch is None:
        raise ConfigError(
            f"train.{key}={value!r}: epochs need the train dataset's length (a dataset with "
            "__len__); give the period in iterations"
        )
    return max(1, round(float(match["n"]) * iters_per_epoch))


@dataclass(frozen=True)
class RunLength:
    """How long a run is, and how that was worked out.

    Attributes:
        max_iter: optimizer steps to train.
        iters_per_epoch: iterations per pass over the train dataset (None when not known).
        samples: the train dataset's length (None when not known).
        batch: the effective batch (samples per optimizer step).
        epochs: ``train.epochs`` when the length was given in epochs, else None.
    """

    max_iter: int
    iters_per_epoch: int | None
    samples: int | None
    batch: int | None
    epochs: float | None = None

    @classmethod
    def of(cls, train: Any, loader: Any, batch: int | None) -> "RunLength":
        """Works out the length from ``train`` and (when built) the train loader.

        Raises:
            ConfigError: ``train.epochs`` with a dataset that has no length.
        """
        check_run_length(train)
        samples = _dataset_length(loader)
        per_epoch = math.ceil(samples / batch) if samples and batch else None
        epochs = train.get("epochs")
        if epochs is None:
            return cls(int(train.max_iter), per_epoch, samples, batch)
        if per_epoch is None:
            raise ConfigError(
                f"train.epochs={epochs} needs a train dataset with a length (__len__); set "
                "train.max_iter instead"
            )
        return cls(max(1, round(epochs * per_epoch)), per_epoch, samples, batch, epochs)

    def describe(self) -> str | None:
        """The log line, e.g. ``600 samples / batch 4 = 150 iterations per epoch; 20 epochs =
        3,000 iterations``; None when the epoch length is not known."""
        if self.iters_per_epoch is None:
            return None
        line = (
            f"{self.samples:,} samples / batch {self.batch} = {self.iters_per_epoch:,} "
            "iterations per epoch; "
        )
        if self.epochs is not None:
            return line + f"{self.epochs:g} epochs = {self.max_iter:,} iterations"
        return (
            line
            + f"{self.max_iter:,} iterations = {self.max_iter / self.iters_per_epoch:.3g} epochs"
        )

    def apply(self, train: Any) -> None:
        """Writes the resolved length, epoch length and periods into a run's ``train`` config,
        so everything built from it (schedules, hooks, writers) uses iterations."""
        train.max_iter = self.max_iter
        train.iters_per_epoch = self.iters_per_epoch
        for key in PERIOD_KEYS:
            value = _get(train, key)
            if isinstance(value, str):
                node, _, last = key.rpartition(".")
                parent = _get(train, node) if node else train
                parent[last] = iterations_of(value, key, self.iters_per_epoch)


def _dataset_length(loader: Any) -> int | None:
    dataset = getattr(loader, "dataset", None)
    try:
        return len(dataset) if dataset is not None else None
    except TypeError:  # an IterableDataset without a length
        return None


def _get(train: Any, dotted: str) -> Any:
    node = train
    for part in dotted.split("."):
        if node is None or not hasattr(node, "get"):
            return None
        node = node.get(part)
    return node
