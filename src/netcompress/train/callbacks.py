"""Callback base class: the extension points compression methods hook into the training loop.

Pruning, network slimming, quantization-aware training and distillation all need to act at a few
fixed points of the loop; they subclass ``Callback`` instead of copying the loop.

Order of calls in ``Trainer.fit``::

    on_fit_start                       (on resume: after model/optimizer/callback states are loaded)
    for each epoch:
        on_epoch_start
        for each batch:
            on_batch_start
            forward; loss = loss_fn(...) + sum(extra_loss(...))
            backward
            on_after_backward              (before gradient clipping and optimizer.step)
            optimizer.step; scheduler.step (per-step schedulers)
            on_step_end                    (step == trainer.global_step, 1 for the first step)
        evaluation; history.append(metrics)
        on_epoch_end                       (may add keys to ``metrics``; they land in history)
        checkpoint written                 (so state changed in on_epoch_end is saved)
    on_fit_end
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Optional

import torch

from ..core.config import Config

if TYPE_CHECKING:  # pragma: no cover
    from .trainer import Trainer


class Callback:
    """No-op hooks; override the ones you need.

    ``state_dict()`` must return only tensors, numbers, strings, bools, None and lists/tuples/dicts
    of those: checkpoints are loaded with ``torch.load(weights_only=True)``."""

    def on_fit_start(self, trainer: "Trainer") -> None:
        pass

    def on_epoch_start(self, trainer: "Trainer", epoch: int) -> None:
        pass

    def on_batch_start(self, trainer: "Trainer", inputs: Any, targets: Any) -> None:
        pass

    def extra_loss(self, trainer: "Trainer", inputs: Any, outputs: Any,
                   targets: Any) -> Optional[torch.Tensor]:
        """A scalar added to the loss before backward (e.g. L1 on BN scales), or None."""
        return None

    def on_after_backward(self, trainer: "Trainer") -> None:
        pass

    def on_step_end(self, trainer: "Trainer", step: int, loss: float) -> None:
        pass

    def on_epoch_end(self, trainer: "Trainer", epoch: int, metrics: dict) -> None:
        pass

    def on_fit_end(self, trainer: "Trainer") -> None:
        pass

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


class CallbackConfig(Config):
    """A trainer callback as data, so a recipe's fine-tune stage can name it (``callbacks: [{type: Distill}]``).

    ``build`` makes the callback for ``model``; ``teacher`` is a function returning the teacher model (the run's
    baseline), called only by callbacks that need one; ``data`` is calibration data."""

    def build(self, model, *, teacher=None, data=None, example_inputs=None) -> Callback:
        raise NotImplementedError
