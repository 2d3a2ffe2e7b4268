"""Optimizers with train and eval modes: schedule-free AdamW / SGD / RAdam (``schedulefree``).

A schedule-free optimizer trains at one point (y) and evaluates at another (x, the average it
keeps): ``optimizer.train()`` before training steps, ``optimizer.eval()`` before evaluation and
checkpoint saves, so the evaluated and saved weights are the average. The trainer puts the
optimizer in train mode at every step (`train_mode`); evaluation and saves run inside
`eval_mode`, which returns to train mode afterwards. For other optimizers both do nothing.

Schedule-free also keeps a few running values per group (``k``, ``weight_sum``, ``lr_max``,
``scheduled_lr``): `group_state_keys` names them so a resume restores them with the
per-parameter state.
"""

import contextlib
from collections.abc import Iterator
from typing import Any

__all__ = ["eval_mode", "group_state_keys", "has_modes", "train_mode"]

_SCHEDULE_FREE_GROUP_STATE = ("k", "weight_sum", "lr_max", "scheduled_lr")


def has_modes(optimizer: Any) -> bool:
    """Whether `optimizer` has ``train()`` and ``eval()`` (schedule-free's protocol)."""
    train, evaluate = getattr(optimizer, "train", None), getattr(optimizer, "eval", None)
    return callable(train) and callable(evaluate)


def train_mode(optimizer: Any) -> None:
    """Puts a schedule-free optimizer in train mode (its parameters at the training point)."""
    if has_modes(optimizer):
        optimizer.train()


@contextlib.contextmanager
def eval_mode(optimizer: Any) -> Iterator[None]:
    """Parameters at a schedule-free optimizer's evaluation point inside, train mode after."""
    if not has_modes(optimizer):
        yield
        return
    optimizer.eval()
    try:
        yield
    finally:
        optimizer.train()


def group_state_keys(optimizer: Any) -> tuple[str, ...]:
    """The per-group keys that are running state, not hyperparameters (restored on resume)."""
    if not has_modes(optimizer):
        return ()
    keys = {k for group in optimizer.param_groups for k in group}
    return tuple(k for k in _SCHEDULE_FREE_GROUP_STATE if k in keys)
