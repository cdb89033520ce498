"""Statistics for reports: a NaN-aware mean (a NaN means "not defined here": a class absent, an empty mask), and the
seeded percentile bootstrap every results table uses (4,000 resamples, 95 %): the paired interval of a mean difference
over cases, with win counts, and the interval of one method's mean."""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

__all__ = [
    "N_RESAMPLES",
    "MIN_CASES",
    "nanmean",
    "PairedDifference",
    "MeanInterval",
    "paired_bootstrap",
    "bootstrap_mean",
    "format_difference",
    "format_mean_interval",
    "ordering",
]

N_RESAMPLES = 4000
"""Bootstrap resamples of every interval in a results table."""

MIN_CASES = 6
"""Fewest cases an ordering is stated on. With fewer, a difference of the same sign in every case is not significant
at 5 % by a two-sided sign test (p = 2 / 2**n >= 0.0625), yet its percentile bootstrap interval excludes 0."""


def nanmean(values: np.ndarray, axis: int | None = None) -> np.ndarray:
    """``np.nanmean`` without the warning: NaN where every value is NaN. float64, ``axis`` reduced."""
    values = np.asarray(values, dtype=np.float64)
    n = (~np.isnan(values)).sum(axis)
    return np.where(n > 0, np.nansum(values, axis) / np.maximum(n, 1), np.nan)


class PairedDifference(NamedTuple):
    """The paired comparison of ``a`` and ``b`` over the cases defined on both sides (:func:`paired_bootstrap`)."""

    mean_a: float
    mean_b: float
    difference: float  # mean of a - b, = mean_a - mean_b
    low: float  # percentile interval of the mean difference; NaN for fewer than two cases
    high: float
    n: int  # cases compared
    dropped: int  # cases left out: NaN on either side
    wins_a: int  # cases with a > b
    wins_b: int  # cases with b > a
    ties: int  # cases with a == b
    confidence: float

    @property
    def resolved(self) -> bool:
        """Whether an ordering may be stated: the interval excludes 0, over at least :data:`MIN_CASES` cases."""
        return bool(self.n >= MIN_CASES and (self.low > 0 or self.high < 0))


class MeanInterval(NamedTuple):
    """One method's spread over cases (:func:`bootstrap_mean`)."""

    mean: float
    sd: float  # sample sd (ddof=1); NaN for fewer than two cases
    low: float  # percentile interval of the mean; NaN for fewer than two cases
    high: float
    n: int  # cases used
    dropped: int  # NaN cases left out
    confidence: float


def _check_confidence(confidence: float) -> None:
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence: expected a level in (0, 1), found {confidence}")


def _percentile_interval(values: np.ndarray, n_resamples: int, seed: int, confidence: float) -> tuple[float, float]:
    """Percentile interval of the mean of ``values`` ``(n,)`` over ``n_resamples`` resamples of the cases with
    replacement, indices ``(n_resamples, n)`` drawn by ``np.random.default_rng(seed)``; NaN for ``n < 2``."""
    if n_resamples < 1:
        raise ValueError(f"n_resamples: expected at least 1, found {n_resamples}")
    n = len(values)
    if n < 2:
        return math.nan, math.nan
    index = np.random.default_rng(seed).integers(0, n, size=(n_resamples, n))
    means = values[index].mean(axis=1)
    alpha = (1.0 - confidence) / 2.0
    low, high = np.percentile(means, [100.0 * alpha, 100.0 * (1.0 - alpha)])
    return float(low), float(high)


def paired_bootstrap(
    a: np.ndarray,
    b: np.ndarray,
    n_resamples: int = N_RESAMPLES,
    seed: int = 0,
    confidence: float = 0.95,
) -> PairedDifference:
    """Paired percentile bootstrap of the mean difference ``a - b`` over cases.

    The cases defined on both sides are kept (a case NaN in ``a`` or ``b`` is dropped and counted in ``dropped``);
    ``n_resamples`` resamples of them with replacement (indices ``(n_resamples, n)`` from
    ``np.random.default_rng(seed)``) give the means of the per-case differences, whose ``(1 - confidence) / 2`` and
    ``(1 + confidence) / 2`` percentiles (``np.percentile``, linear) are the interval. With fewer than two cases the
    interval is NaN (nothing to resample); with none the means are NaN too.

    Args:
        a, b: per-case values ``(n,)``, the same cases in the same order.
        n_resamples: bootstrap resamples (4,000 in every results table).
        seed: seed of the resample indices.
        confidence: level of the interval.
    """
    _check_confidence(confidence)
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.ndim != 1 or b.ndim != 1:
        raise ValueError(f"a, b: expected 1D arrays of per-case values, found shapes {a.shape} and {b.shape}")
    if len(a) != len(b):
        raise ValueError(f"a, b: expected the same cases on both sides, found {len(a)} and {len(b)} values")
    keep = ~(np.isnan(a) | np.isnan(b))
    a, b = a[keep], b[keep]
    diff = a - b
    low, high = _percentile_interval(diff, n_resamples, seed, confidence)
    n = len(diff)
    return PairedDifference(
        mean_a=float(a.mean()) if n else math.nan,
        mean_b=float(b.mean()) if n else math.nan,
        difference=float(diff.mean()) if n else math.nan,
        low=low,
        high=high,
        n=n,
        dropped=int((~keep).sum()),
        wins_a=int((diff > 0).sum()),
        wins_b=int((diff < 0).sum()),
        ties=int((diff == 0).sum()),
        confidence=confidence,
    )


def bootstrap_mean(
    values: np.ndarray, n_resamples: int = N_RESAMPLES, seed: int = 0, confidence: float = 0.95
) -> MeanInterval:
    """Mean, sample sd (``ddof=1``) and percentile bootstrap interval of the mean of per-case ``values`` ``(n,)``,
    NaN cases dropped and counted; resampled as :func:`paired_bootstrap`."""
    _check_confidence(confidence)
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 1:
        raise ValueError(f"values: expected a 1D array of per-case values, found shape {values.shape}")
    keep = ~np.isnan(values)
    v = values[keep]
    low, high = _percentile_interval(v, n_resamples, seed, confidence)
    return MeanInterval(
        mean=float(v.mean()) if len(v) else math.nan,
        sd=float(v.std(ddof=1)) if len(v) > 1 else math.nan,
        low=low,
        high=high,
        n=len(v),
        dropped=int((~keep).sum()),
        confidence=confidence,
    )


def format_difference(result: PairedDifference, digits: int = 3, unit: str = "") -> str:
    """``"-0.064 [-0.095, -0.032], 6/20"``: the mean difference, its interval, and the cases ``a`` wins out of those
    compared, followed by ``unit`` (``"6/20 volumes"``) and the ties if any (``"6/20 volumes, 2 tied"``); ``"nan"``
    when no case is defined on both sides."""
    if result.n == 0:
        return "nan"
    text = f"{result.difference:.{digits}f} [{result.low:.{digits}f}, {result.high:.{digits}f}]"
    text += f", {result.wins_a}/{result.n}" + (f" {unit}" if unit else "")
    return text + (f", {result.ties} tied" if result.ties else "")


def format_mean_interval(result: MeanInterval, digits: int = 3) -> str:
    """``"0.812 +- 0.050 [0.790, 0.834]"``: mean +- sample sd and the interval of the mean (``"nan"`` for no case)."""
    if result.n == 0:
        return "nan"
    return f"{result.mean:.{digits}f} +- {result.sd:.{digits}f} [{result.low:.{digits}f}, {result.high:.{digits}f}]"


def ordering(result: PairedDifference, a: str, b: str, lower_is_better: bool = False) -> str:
    """What a report may say of ``a`` against ``b``: ``"<a> better"`` or ``"<b> better"`` only where the interval of
    ``a - b`` excludes 0 over at least :data:`MIN_CASES` cases (:attr:`PairedDifference.resolved`), else ``"not
    resolved on these data"`` (``" (fewer than 6 cases)"`` added where only the count stands in the way). ``lower_is_better`` for distances and losses (a
    negative difference then favours ``a``)."""
    if not result.resolved:
        few = f" (fewer than {MIN_CASES} cases)" if result.n < MIN_CASES and (result.low > 0 or result.high < 0) else ""
        return f"not resolved on these data{few}"
    a_higher = result.low > 0
    return f"{a if a_higher != lower_is_better else b} better"
