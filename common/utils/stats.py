"""Statistics for reports: a NaN-aware mean (a NaN means "not defined here": a class absent, an empty mask), and the
seeded percentile bootstrap every results table uses (4,000 resamples, 95 %): the paired interval of a mean difference
over cases, with win counts, and the interval of one method's mean; per-case rows grouped by setting and paired by
case; the CSV columns a report writes the results as (and reads a mean's interval back from), and what a set of
paired intervals can resolve."""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from typing import NamedTuple, TypeVar

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
    "mean_interval_columns",
    "mean_interval_from_columns",
    "difference_columns",
    "group_by_case",
    "paired_by_case",
    "format_resolution",
]

_K = TypeVar("_K", bound=Hashable)

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


def _column(key: str, name: str) -> str:
    return f"{key}_{name}" if key else name


def mean_interval_columns(key: str, result: MeanInterval) -> dict[str, float | int]:
    """``result`` as the columns of a summary row: ``<key>_mean``, ``<key>_sd``, ``<key>_ci_low``, ``<key>_ci_high``
    and ``<key>_n`` (the cases used), in that order; with ``key=""`` the bare ``mean``, ``sd``, ``ci_low``,
    ``ci_high``, ``n``. The dropped cases are the row's cases less ``n``: :func:`mean_interval_from_columns` reads
    the columns back."""
    return {
        _column(key, "mean"): result.mean,
        _column(key, "sd"): result.sd,
        _column(key, "ci_low"): result.low,
        _column(key, "ci_high"): result.high,
        _column(key, "n"): result.n,
    }


def mean_interval_from_columns(
    row: Mapping[str, object], key: str, cases: int, confidence: float = 0.95
) -> MeanInterval:
    """The :class:`MeanInterval` that :func:`mean_interval_columns` wrote as ``row``'s ``key`` columns (numbers or
    their CSV text), over ``cases`` cases (``dropped = cases - n``); ``confidence`` is not stored in the row."""
    n = int(row[_column(key, "n")])
    return MeanInterval(
        mean=float(row[_column(key, "mean")]),
        sd=float(row[_column(key, "sd")]),
        low=float(row[_column(key, "ci_low")]),
        high=float(row[_column(key, "ci_high")]),
        n=n,
        dropped=int(cases) - n,
        confidence=confidence,
    )


def difference_columns(result: PairedDifference) -> dict[str, float | int | bool]:
    """``result`` as the columns of a differences row, in this order: ``mean_a``, ``mean_b``, ``difference`` (of
    ``a - b``), ``ci_low``, ``ci_high``, ``a_higher`` / ``b_higher`` / ``ties`` (the cases by the sign of ``a - b``;
    for a lower-is-better score ``b_higher`` are ``a``'s wins), ``n`` (cases compared), ``dropped`` (cases undefined
    on either side) and ``resolved`` (:attr:`PairedDifference.resolved`)."""
    return {
        "mean_a": result.mean_a,
        "mean_b": result.mean_b,
        "difference": result.difference,
        "ci_low": result.low,
        "ci_high": result.high,
        "a_higher": result.wins_a,
        "b_higher": result.wins_b,
        "ties": result.ties,
        "n": result.n,
        "dropped": result.dropped,
        "resolved": result.resolved,
    }


def group_by_case(
    rows: Iterable[Mapping[str, object]],
    setting: Callable[[Mapping[str, object]], _K],
    name: Callable[[Mapping[str, object]], str],
    unit: str = "case",
) -> dict[_K, dict[str, Mapping[str, object]]]:
    """Per-case ``rows`` (each with a ``case``) by ``setting(row)``, settings in order of first appearance, each as
    ``{case: row}`` sorted by case, so that an interval does not depend on the order of the rows. A second row of a
    case in one setting raises a ``ValueError``: ``"<name(row)>: expected one row per <unit>, found <case> twice"``."""
    groups: dict[_K, dict[str, Mapping[str, object]]] = {}
    for r in rows:
        group = groups.setdefault(setting(r), {})
        if str(r["case"]) in group:
            raise ValueError(f"{name(r)}: expected one row per {unit}, found {r['case']} twice")
        group[str(r["case"])] = r
    return {k: dict(sorted(group.items())) for k, group in groups.items()}


def paired_by_case(
    a: Mapping[str, Mapping[str, object]],
    b: Mapping[str, Mapping[str, object]],
    keys: Iterable[str],
    names: tuple[str, str],
    unit: str = "cases",
    n_resamples: int = N_RESAMPLES,
    seed: int = 0,
) -> dict[str, PairedDifference]:
    """:func:`paired_bootstrap` of ``a - b`` on each of ``keys`` of two settings' per-case rows ``{case: row}``
    (:func:`group_by_case`), the cases in ``a``'s order; ``n_resamples`` resamples seeded by ``seed``. The two must
    hold the same cases, else a ``ValueError``: ``"<a's name> and <b's name>: expected the same <unit> to pair, found
    [...] and [...]"`` (``names``: the two settings' names)."""
    if set(a) != set(b):
        raise ValueError(
            f"{names[0]} and {names[1]}: expected the same {unit} to pair, found {sorted(a)} and {sorted(b)}"
        )
    cases = list(a)
    return {
        key: paired_bootstrap(
            np.array([float(a[c][key]) for c in cases]),
            np.array([float(b[c][key]) for c in cases]),
            n_resamples,
            seed,
        )
        for key in keys
    }


def format_resolution(results: Sequence[PairedDifference], unit: str, label: str, digits: int = 3) -> str:
    """What paired ``results`` of one score can resolve: ``"With 5/6 subjects the DSC differences' intervals reach
    0.020 to 0.050 either side of the mean: smaller differences are not resolved."`` (the counts of cases compared,
    the least and greatest half-width of the intervals, NaN ones left out); ``""`` where no interval is defined."""
    half = [(r.high - r.low) / 2 for r in results]
    half = [h for h in half if not math.isnan(h)]
    if not half:
        return ""
    counts = "/".join(map(str, sorted({r.n for r in results})))
    return (
        f"With {counts} {unit} the {label} differences' intervals reach {min(half):.{digits}f} to "
        f"{max(half):.{digits}f} either side of the mean: smaller differences are not resolved."
    )
