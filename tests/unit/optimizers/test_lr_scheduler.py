"""CosineAnnealingLateRestarts against the original training loop (BMIRDS/3dMRISegmentation ``train.py``) rebuilt on
torch's own CosineAnnealingLR, step for step; resumed from state dicts; stepped per iteration by MONAI's handler."""

from __future__ import annotations

import pytest
import torch
from ignite.engine import Engine, Events
from monai.handlers import LrScheduleHandler
from torch.optim.lr_scheduler import CosineAnnealingLR

from common.optimizers import CosineAnnealingLateRestarts


def make_optimizer(base_lrs: list[float]) -> torch.optim.Optimizer:
    return torch.optim.SGD([{"params": [torch.nn.Parameter(torch.zeros(1))], "lr": lr} for lr in base_lrs])


def lrs_of(optimizer: torch.optim.Optimizer) -> list[float]:
    return [group["lr"] for group in optimizer.param_groups]


def original_lrs(
    base_lrs: list[float], iterations: int, period: int, epochs: int, eta_min: float = 0.0
) -> list[list[float]]:
    """The lrs of every optimiser step of the original loop: ``CosineAnnealingLR(T_max=period * iterations)`` stepped
    after each optimiser step; after 0-based epoch ``epoch`` with ``epoch > period and epoch % period == 0`` it sets
    ``scheduler.last_epoch = -1``, and under its PyTorch 1.3 the next step then returned the base lrs
    (``get_lr``: ``if self.last_epoch == 0: return self.base_lrs``). Current torch returns the current lr there, so
    that step is rebuilt as a fresh scheduler at the base lrs."""
    optimizer = make_optimizer(base_lrs)
    scheduler = CosineAnnealingLR(optimizer, T_max=period * iterations, eta_min=eta_min)
    restarted = False
    out = []
    for epoch in range(epochs):
        for _ in range(iterations):
            out.append(lrs_of(optimizer))
            optimizer.step()
            if restarted:
                for group in optimizer.param_groups:
                    group["lr"] = group["initial_lr"]
                scheduler = CosineAnnealingLR(optimizer, T_max=period * iterations, eta_min=eta_min)
                restarted = False
            else:
                scheduler.step()
        restarted = epoch > period and epoch % period == 0
    return out


def scheduled_lrs(scheduler: CosineAnnealingLateRestarts, steps: int) -> list[list[float]]:
    """The lrs of ``steps`` optimiser steps, the scheduler stepped after each."""
    out = []
    for _ in range(steps):
        out.append(lrs_of(scheduler.optimizer))
        scheduler.optimizer.step()
        scheduler.step()
    return out


@pytest.mark.parametrize(
    "base_lrs, iterations, period, epochs, eta_min",
    [([1e-3], 3, 50, 260, 0.0), ([1e-3, 1e-4], 2, 4, 23, 1e-5), ([1e-3], 3, 1, 8, 0.0)],
)
def test_equals_the_original_loop_step_for_step(base_lrs, iterations, period, epochs, eta_min):
    expected = original_lrs(base_lrs, iterations, period, epochs, eta_min)
    scheduler = CosineAnnealingLateRestarts(make_optimizer(base_lrs), iterations, period, eta_min)
    found = scheduled_lrs(scheduler, epochs * iterations)
    assert len(found) == len(expected) == epochs * iterations
    for step, (f, e) in enumerate(zip(found, expected)):
        assert f == pytest.approx(e, rel=1e-9, abs=1e-15), f"step {step}"


def test_the_reference_restarts_where_the_original_does():
    """A period of 50 epochs x 3 iterations: the minimum after epoch 50, back at the base lr at the first step of
    epoch 101 (1-based), falling through epoch 101; the restarts take effect at the second step of epochs 102, 152,
    202, 252."""
    lrs = [lr for (lr,) in original_lrs([1e-3], 3, 50, 260)]
    assert lrs[0] == 1e-3 and lrs[150] == 0.0 and lrs[300] == pytest.approx(1e-3, rel=1e-12)
    assert lrs[300] > lrs[301] > lrs[302] > lrs[303]
    restarts = [step for step in range(1, len(lrs)) if lrs[step] > lrs[step - 1] and lrs[step] == 1e-3]
    assert restarts == [304, 454, 604, 754]


def test_resumes_from_state_dicts_at_an_epoch_boundary():
    iterations, period, epochs, stop = 3, 4, 23, 11
    uninterrupted = scheduled_lrs(CosineAnnealingLateRestarts(make_optimizer([1e-3]), iterations, period), 69)
    first = CosineAnnealingLateRestarts(make_optimizer([1e-3]), iterations, period)
    before = scheduled_lrs(first, stop * iterations)
    resumed = CosineAnnealingLateRestarts(make_optimizer([1e-3]), iterations, period)
    resumed.optimizer.load_state_dict(first.optimizer.state_dict())
    resumed.load_state_dict(first.state_dict())
    assert before + scheduled_lrs(resumed, (epochs - stop) * iterations) == uninterrupted


def test_monai_handler_stepping_per_iteration_follows_the_original():
    iterations, period, epochs = 3, 2, 12
    scheduler = CosineAnnealingLateRestarts(make_optimizer([1e-3]), iterations, period)
    trainer = Engine(lambda engine, batch: scheduler.optimizer.step())
    LrScheduleHandler(scheduler, print_lr=False, epoch_level=False).attach(trainer)
    found = []
    trainer.add_event_handler(Events.ITERATION_STARTED, lambda engine: found.extend(lrs_of(scheduler.optimizer)))
    trainer.run(range(iterations), max_epochs=epochs)
    expected = [lr for (lr,) in original_lrs([1e-3], iterations, period, epochs)]
    assert found == pytest.approx(expected, rel=1e-9, abs=1e-15)


@pytest.mark.parametrize("iterations, period, name", [(0, 50, "iterations_per_epoch"), (3, 0, "period_epochs")])
def test_refuses_empty_epochs_or_periods(iterations, period, name):
    with pytest.raises(ValueError, match=f"{name}: expected >= 1, found 0"):
        CosineAnnealingLateRestarts(make_optimizer([1e-3]), iterations, period)
