"""HookBase: the extension points of the training loop."""

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pgtrain.engine.loop.trainer import Trainer

__all__ = ["HookBase"]


class HookBase:
    """Code that runs at fixed points of training; hooks run in the order of the trainer's list.

    The trainer sets ``self.trainer`` before training starts. A hook reads ``trainer.iter`` (the
    iteration being run or just finished, 0-based), ``trainer.start_iter``, ``trainer.max_iter``,
    ``trainer.model``, ``trainer.optimizer`` and ``trainer.storage`` (the metrics of this run).

    Order of calls for one iteration: ``before_step``, forward and backward of every micro-batch,
    gradient clipping, ``after_backward`` (gradients are final; the optimizer has not stepped),
    optimizer step, ``after_step``.
    """

    trainer: "Trainer"

    def before_train(self) -> None:
        """Runs once before the first iteration."""

    def after_train(self) -> None:
        """Runs once after the last iteration, also when training stopped with an error."""

    def before_step(self) -> None:
        """Runs before each iteration."""

    def after_backward(self) -> None:
        """Runs after the backward pass and gradient clipping, before the optimizer step."""

    def after_step(self) -> None:
        """Runs after each optimizer step."""

    def state_dict(self) -> dict[str, Any]:
        """Returns the hook's resumable state (tensors and plain values only)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restores what `state_dict` returned."""
