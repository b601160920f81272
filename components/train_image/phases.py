"""The two-phase schedule of :func:`components.train_image.logic.train_image`, shared by both training loops.

Whether a run trains with ``model.fit`` (one process) or with the custom loop of
:mod:`components.train_image.distributed` (several workers), it goes through the same phases, in the same
order, with the same settings:

1. ``head``: the backbone frozen, the head trained at ``head_lr`` for ``head_epochs``;
2. ``fine_tune`` (when ``fine_tune_epochs`` > 0): the top ``fine_tune_layers`` backbone layers unfrozen
   (:func:`components.train_image.model.set_phase` keeps BatchNormalization frozen and in inference mode)
   at ``fine_tune_lr``, reached by a linear warm-up over ``warmup_fraction`` of the phase's steps from a
   tenth of it, then cosine decay to zero.

Every phase stops early on the validation accuracy (:class:`BestEpoch`: ``patience`` epochs without a
better one) and ends with the weights of its best epoch, as Keras's ``EarlyStopping`` with
``restore_best_weights=True`` does.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from components.train_image.logic import TrainImageConfig

__all__ = ["Phase", "phase_plan", "learning_rate", "BestEpoch", "steps_per_epoch"]


@dataclass(frozen=True)
class Phase:
    """One phase: its name, how many epochs at most, and how many backbone layers train (0: frozen)."""

    name: str
    epochs: int
    fine_tune_layers: int


def phase_plan(config: TrainImageConfig) -> list[Phase]:
    """The phases a run goes through, in order."""
    plan = [Phase("head", config.head_epochs, 0)]
    if config.fine_tune_epochs:
        plan.append(Phase("fine_tune", config.fine_tune_epochs, config.fine_tune_layers))
    return plan


def steps_per_epoch(train_images: int, global_batch: int) -> int:
    """Optimizer steps in one epoch over ``train_images`` at a global batch of ``global_batch``."""
    return max(1, math.ceil(train_images / global_batch))


def learning_rate(config: TrainImageConfig, phase: Phase, steps: int) -> Any:
    """The phase's learning rate: ``head_lr`` for the head; for fine-tuning a Keras ``CosineDecay`` over
    the phase's ``steps`` per epoch times its epochs, with the warm-up (a new optimizer starts every phase at
    step 0)."""
    if phase.name == "head":
        return config.head_lr
    import keras

    total = steps * phase.epochs
    warmup = int(total * config.warmup_fraction)
    return keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=config.fine_tune_lr / 10 if warmup else config.fine_tune_lr,
        decay_steps=max(1, total - warmup), warmup_target=config.fine_tune_lr if warmup else None,
        warmup_steps=warmup)


class BestEpoch:
    """Early stopping on a metric to maximise, keeping the best epoch's weights.

    :meth:`update` after every epoch says whether to stop: after ``patience`` epochs in a row without a
    strictly better value (never after the first epoch). :meth:`restore` puts the best epoch's weights back.
    Every worker of a multi-worker run sees the same (all-reduced) metric, so all stop at the same epoch.
    """

    def __init__(self, patience: int) -> None:
        self.patience = patience
        self.best = -math.inf
        self.best_epoch = -1
        self.wait = 0
        self.weights: list[Any] | None = None
        self.stopped_epoch = -1

    def update(self, epoch: int, value: float, get_weights: Callable[[], list[Any]]) -> bool:
        self.wait += 1
        if self.best_epoch < 0 or value > self.best:  # the first epoch is the best so far, whatever its value
            self.best, self.best_epoch, self.wait = value, epoch, 0
            self.weights = get_weights()
            return False
        if self.wait >= self.patience and epoch > 0:
            self.stopped_epoch = epoch
            return True
        return False

    def restore(self, set_weights: Callable[[list[Any]], None]) -> None:
        if self.weights is not None:
            set_weights(self.weights)
