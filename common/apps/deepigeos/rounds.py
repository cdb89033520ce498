"""Rounds of simulated clicks as a user gives them: each round's clicks drawn on the errors of the current label,
added to the earlier rounds' clicks, and the label refined with all of them. The interactive evaluation and the R-Net
training samples both draw their clicks here, so that R-Net is trained on the clicks it is evaluated with."""

from __future__ import annotations

import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from monai.config import NdarrayOrTensor
from monai.utils.type_conversion import convert_to_tensor

from common.transforms import clicks_to_seeds, paint_balls, simulate_clicks

__all__ = ["REFINE_FROM", "Round", "Step", "case_seed", "ball_step", "simulate_rounds"]

REFINE_FROM = ("initial", "previous")
"""The label a round refines: the initial (automatic) segmentation, or the label of the round before."""

Step = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, float]]
"""A refinement step: ``(label (*S), seeds (2, *S) of every click so far) -> (new label (*S) int64 on the CPU,
seconds)``."""


def case_seed(seed: int, *parts: object) -> int:
    """A 32-bit seed from ``seed`` and identifiers (case id, round): equal arguments give equal seeds in every process
    (unlike Python's salted ``hash``)."""
    return zlib.crc32(":".join(str(p) for p in (seed, *parts)).encode())


@dataclass(frozen=True)
class Round:
    """One round of :func:`simulate_rounds`: the label after it ``(*S)``, the round's foreground and background
    clicks ``(n, len(S))``, the seed maps of every click so far ``(2, *S)`` float32 (background, foreground), the
    round's click count, the count so far, and the seconds of the refinement step."""

    label: torch.Tensor
    foreground: np.ndarray
    background: np.ndarray
    seeds: torch.Tensor
    clicks: int
    clicks_total: int
    seconds: float


def ball_step(radius: float) -> Step:
    """The refinement step without a network: a ball of ``radius`` voxels painted at every click so far
    (:func:`common.transforms.paint_balls`), timed."""

    def step(base: torch.Tensor, seeds: torch.Tensor) -> tuple[torch.Tensor, float]:
        t0 = time.perf_counter()
        out = paint_balls(base, seeds, radius)
        return out, time.perf_counter() - t0

    return step


def simulate_rounds(
    label: NdarrayOrTensor,
    start: NdarrayOrTensor,
    step: Step,
    rounds: int,
    seed: int,
    ids: Sequence[object],
    refine_from: str = "initial",
    refine_last: bool = True,
    min_size: int = 30,
    voxels_per_click: int = 100,
    max_clicks: int | None = 10,
    slice_choice: str = "all_errors",
) -> list[Round]:
    """``rounds`` rounds of simulated clicks on one case, each refined by ``step``.

    Round ``r`` draws its clicks (:func:`common.transforms.simulate_clicks`: the DeepIGeoS rule on the slices with
    the most errors, at most ``max_clicks``) on the errors of the current label (``start`` in round 1, then the label
    after the round before) from ``np.random.RandomState(case_seed(seed, *ids, r))``, adds them to the clicks of the
    earlier rounds (a user's clicks stay), and ``step`` refines the ``start`` label (``refine_from="initial"``) or the
    current one (``"previous"``) with all clicks so far. A round without clicks (no error region large enough) keeps
    the label and runs no step. With ``refine_last`` False the last round's clicks are drawn but its step is not run
    (its ``label`` is the one its clicks were drawn on): for a caller that needs only the clicks.

    Args:
        label: ``(*S)`` ground truth (non-zero = foreground).
        start: ``(*S)`` the initial label (integer or bool).
        step: the refinement (:data:`Step`), e.g. :func:`ball_step` or R-Net through :func:`refine`.
        rounds: rounds of clicks, at least 1.
        seed, ids: the clicks' seeds (with the round): e.g. ``ids = (case,)`` in the evaluation.
        refine_from: one of :data:`REFINE_FROM`.
        refine_last: whether the last round's step runs.
        min_size, voxels_per_click, max_clicks, slice_choice: the click rule, as in
            :func:`common.transforms.simulate_clicks`.

    Returns: one :class:`Round` per round, labels ``(*S)`` int64 on the CPU.
    """
    if rounds < 1:
        raise ValueError(f"rounds: expected at least 1 round of clicks, found {rounds}")
    if refine_from not in REFINE_FROM:
        raise ValueError(f"refine_from: expected one of {list(REFINE_FROM)}, found {refine_from!r}")
    truth = convert_to_tensor(label, track_meta=False).cpu().numpy() != 0
    initial = convert_to_tensor(start, track_meta=False).cpu().long()
    if tuple(initial.shape) != truth.shape:
        raise ValueError(f"label, start: expected the same shape, found {truth.shape} and {tuple(initial.shape)}")
    current = initial
    seeds = torch.zeros((2, *truth.shape), dtype=torch.float32)
    total = 0
    out = []
    for r in range(1, rounds + 1):
        rng = np.random.RandomState(case_seed(seed, *ids, r))
        fg, bg = simulate_clicks(
            current.numpy() != 0,
            truth,
            rng,
            min_size,
            voxels_per_click,
            max_clicks=max_clicks,
            slice_choice=slice_choice,
        )
        n = len(fg) + len(bg)
        total += n
        seconds = 0.0
        if n:
            seeds = torch.maximum(seeds, torch.from_numpy(clicks_to_seeds(fg, bg, truth.shape)))
            if refine_last or r < rounds:
                current, seconds = step(initial if refine_from == "initial" else current, seeds)
        out.append(Round(current, fg, bg, seeds, n, total, seconds))
    return out
