"""Learning-rate schedulers stepped per iteration."""

from __future__ import annotations

import math

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

__all__ = ["CosineAnnealingLateRestarts"]


class CosineAnnealingLateRestarts(LRScheduler):
    """Cosine annealing stepped per iteration, with a period of ``period_epochs`` epochs, restarted at the base lr
    after epoch ``2 * period_epochs + 1`` (1-based) and every ``period_epochs`` epochs after that: the schedule of
    zoom-in & zoom-out's original training script (BMIRDS/3dMRISegmentation ``train.py``: ``CosineAnnealingLR(T_max =
    restart * len(train_loader))`` stepped after each optimiser step, and ``scheduler.last_epoch = -1`` after the
    0-based epoch ``epoch`` when ``epoch > restart and epoch % restart == 0``; under its PyTorch 1.3 the step after
    that reset returns the base lr).

    With ``T = period_epochs * iterations_per_epoch`` and ``k`` the scheduler steps since the last restart, the lr is
    ``eta_min + (base_lr - eta_min) * (1 + cos(pi * k / T)) / 2``. Cosine annealing is periodic past ``T``, so the
    first period is smooth: the lr falls for ``period_epochs`` epochs, rises back for ``period_epochs`` and falls for
    one more epoch before the first restart. As in the original, a restart takes effect one iteration late: the first
    iteration after it still uses the lr the previous period set, the next one the base lr (the original resets the
    counter, and the step after the following iteration returns the base lr).

    Step it after every optimiser step (an ignite ``LrScheduleHandler`` with ``epoch_level=False``). The lr is a
    function of the step count alone, so the state dict (``last_epoch``) resumes it exactly.

    Args:
        optimizer: the wrapped optimiser; each parameter group's lr when the scheduler is made is its base lr.
        iterations_per_epoch: optimiser steps per epoch (the training data loader's length).
        period_epochs: the period of the cosine, and of the restarts after the first, in epochs (the original's
            ``--restart``, 50).
        eta_min: the lowest lr (the original's is 0).
        last_epoch: the index of the last scheduler step (-1: start afresh).

    Raises:
        ValueError: ``iterations_per_epoch`` or ``period_epochs`` below 1.
    """

    def __init__(
        self,
        optimizer: Optimizer,
        iterations_per_epoch: int,
        period_epochs: int = 50,
        eta_min: float = 0.0,
        last_epoch: int = -1,
    ) -> None:
        for name, value in (("iterations_per_epoch", iterations_per_epoch), ("period_epochs", period_epochs)):
            if value < 1:
                raise ValueError(f"{name}: expected >= 1, found {value}")
        self.iterations_per_epoch = iterations_per_epoch
        self.period_epochs = period_epochs
        self.eta_min = eta_min
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        """The lr of each parameter group at step ``last_epoch`` (closed form, independent of the current lr)."""
        n, period = self.iterations_per_epoch, self.period_epochs
        # restart j >= 2 follows the iterations of 0-based epoch j * period; the scheduler step after the next iteration
        # returns the base lr, so k = 0 at step (j * period + 1) * n + 1
        j = (self.last_epoch - n - 1) // (period * n)
        k = self.last_epoch if j < 2 else self.last_epoch - (j * period + 1) * n - 1
        cosine = (1 + math.cos(math.pi * k / (period * n))) / 2
        return [self.eta_min + (base_lr - self.eta_min) * cosine for base_lr in self.base_lrs]
