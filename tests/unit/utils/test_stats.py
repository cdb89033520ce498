"""common.utils.stats: the paired bootstrap and the bootstrap of a mean against explicit loops on the same resample
indices and against scipy.stats.bootstrap (percentile method, within resampling noise); NaN cases dropped and
counted, win and tie counts, the formatted text, the refusals, the CSV columns of both results (a mean's interval
read back from its columns, also as CSV text), and per-case rows grouped by setting and paired by case."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from common.utils.stats import (
    N_RESAMPLES,
    bootstrap_mean,
    difference_columns,
    format_difference,
    format_mean_interval,
    format_resolution,
    group_by_case,
    mean_interval_columns,
    mean_interval_from_columns,
    nanmean,
    ordering,
    paired_bootstrap,
    paired_by_case,
)


def _percentile(values: list[float], q: float) -> float:
    """The ``q``-th percentile by hand, linear between order statistics (numpy's default)."""
    ordered = sorted(values)
    position = q / 100.0 * (len(ordered) - 1)
    below = math.floor(position)
    above = min(below + 1, len(ordered) - 1)
    return ordered[below] + (position - below) * (ordered[above] - ordered[below])


def _loops(diff: list[float], n_resamples: int, seed: int) -> tuple[float, float]:
    """Percentile 95 % interval of the mean of ``diff`` with explicit loops, resample indices drawn as documented."""
    index = np.random.default_rng(seed).integers(0, len(diff), size=(n_resamples, len(diff)))
    means = []
    for row in index:
        total = 0.0
        for i in row:
            total += diff[int(i)]
        means.append(total / len(row))
    return _percentile(means, 2.5), _percentile(means, 97.5)


def test_paired_bootstrap_is_the_explicit_loops_on_a_tiny_case():
    a = [0.81, 0.74, 0.90, 0.62, 0.77]
    b = [0.79, 0.80, 0.85, 0.70, 0.77]
    result = paired_bootstrap(np.array(a), np.array(b), n_resamples=300, seed=7)
    diff = [x - y for x, y in zip(a, b)]
    low, high = _loops(diff, 300, 7)
    assert result.low == pytest.approx(low, abs=1e-12) and result.high == pytest.approx(high, abs=1e-12)
    assert result.difference == pytest.approx(sum(diff) / 5, abs=1e-12)
    assert result.mean_a == pytest.approx(np.mean(a)) and result.mean_b == pytest.approx(np.mean(b))
    assert (result.n, result.dropped, result.wins_a, result.wins_b, result.ties) == (5, 0, 2, 2, 1)
    assert result.confidence == 0.95 and not result.resolved  # the interval includes 0
    again = paired_bootstrap(np.array(a), np.array(b), n_resamples=300, seed=7)
    assert again == result  # seeded: the same interval every time
    other = paired_bootstrap(np.array(a), np.array(b), n_resamples=300, seed=8)
    assert (other.low, other.high) != (result.low, result.high)


def test_paired_bootstrap_agrees_with_scipy_within_resampling_noise():
    rng = np.random.default_rng(1)
    b = rng.uniform(0.6, 0.9, 20)
    a = b - 0.05 + rng.normal(0, 0.04, 20)
    ours = paired_bootstrap(a, b)
    reference = stats.bootstrap(
        (a, b),
        lambda x, y, axis: np.mean(x - y, axis=axis),
        paired=True,
        vectorized=True,
        n_resamples=40000,
        method="percentile",
        confidence_level=0.95,
        rng=np.random.default_rng(123),
    ).confidence_interval
    width = ours.high - ours.low
    same_draws = stats.bootstrap(
        (a - b,), np.mean, n_resamples=N_RESAMPLES, method="percentile", rng=np.random.default_rng(0)
    ).confidence_interval  # scipy draws its indices (n_resamples, n) from the generator as we do
    assert (ours.low, ours.high) == pytest.approx((same_draws.low, same_draws.high), abs=1e-12)
    assert ours.low == pytest.approx(reference.low, abs=0.05 * width)
    assert ours.high == pytest.approx(reference.high, abs=0.05 * width)
    assert ours.resolved and ours.high < 0 and ours.wins_b > ours.wins_a  # b better, the interval excludes 0
    mean = bootstrap_mean(a)
    one = stats.bootstrap((a,), np.mean, n_resamples=40000, method="percentile", rng=np.random.default_rng(5))
    width = mean.high - mean.low
    assert mean.low == pytest.approx(one.confidence_interval.low, abs=0.05 * width)
    assert mean.high == pytest.approx(one.confidence_interval.high, abs=0.05 * width)


def test_nan_cases_are_dropped_and_counted():
    a = np.array([0.8, np.nan, 0.7, 0.9, 0.6, 0.75])
    b = np.array([0.7, 0.8, np.nan, 0.9, 0.65, 0.7])
    result = paired_bootstrap(a, b, n_resamples=500, seed=3)
    kept = paired_bootstrap(a[[0, 3, 4, 5]], b[[0, 3, 4, 5]], n_resamples=500, seed=3)
    assert result._replace(dropped=0) == kept and result.dropped == 2
    assert (result.n, result.wins_a, result.wins_b, result.ties) == (4, 2, 1, 1)
    values = bootstrap_mean(a, n_resamples=500, seed=3)
    low, high = _loops([0.8, 0.7, 0.9, 0.6, 0.75], 500, 3)
    assert (values.n, values.dropped) == (5, 1) and values.mean == pytest.approx(0.75)
    assert values.sd == pytest.approx(np.std([0.8, 0.7, 0.9, 0.6, 0.75], ddof=1))
    assert values.low == pytest.approx(low, abs=1e-12) and values.high == pytest.approx(high, abs=1e-12)


def test_too_few_cases_give_no_interval():
    one = paired_bootstrap(np.array([0.9, np.nan]), np.array([0.5, 0.4]))
    assert one.n == 1 and one.difference == pytest.approx(0.4) and math.isnan(one.low) and math.isnan(one.high)
    assert not one.resolved  # one case resolves nothing
    none = paired_bootstrap(np.array([np.nan]), np.array([0.5]))
    assert none.n == 0 and none.dropped == 1 and math.isnan(none.difference) and format_difference(none) == "nan"
    single = bootstrap_mean(np.array([0.5]))
    assert single.mean == 0.5 and math.isnan(single.sd) and math.isnan(single.low)
    assert format_mean_interval(bootstrap_mean(np.array([np.nan]))) == "nan"


def test_formatting():
    a = np.array([0.70, 0.60, 0.80, 0.75, 0.70])
    b = np.array([0.75, 0.70, 0.78, 0.80, 0.70])
    r = paired_bootstrap(a, b, n_resamples=N_RESAMPLES)
    text = f"{r.difference:.3f} [{r.low:.3f}, {r.high:.3f}], 1/5"
    assert format_difference(r) == f"{text}, 1 tied"
    assert (
        format_difference(r, 2, unit="volumes")
        == f"{r.difference:.2f} [{r.low:.2f}, {r.high:.2f}], 1/5 volumes, 1 tied"
    )
    m = bootstrap_mean(a)
    assert format_mean_interval(m) == f"{m.mean:.3f} +- {m.sd:.3f} [{m.low:.3f}, {m.high:.3f}]"


def test_refusals():
    with pytest.raises(ValueError, match=r"a, b: expected the same cases on both sides, found 3 and 4 values"):
        paired_bootstrap(np.zeros(3), np.zeros(4))
    with pytest.raises(ValueError, match=r"a, b: expected 1D arrays of per-case values, found shapes \(2, 2\) and"):
        paired_bootstrap(np.zeros((2, 2)), np.zeros(4))
    with pytest.raises(ValueError, match=r"confidence: expected a level in \(0, 1\), found 95"):
        paired_bootstrap(np.zeros(3), np.zeros(3), confidence=95)
    with pytest.raises(ValueError, match="n_resamples: expected at least 1, found 0"):
        bootstrap_mean(np.zeros(3), n_resamples=0)
    with pytest.raises(ValueError, match=r"values: expected a 1D array of per-case values, found shape \(\)"):
        bootstrap_mean(np.float64(1.0))


def test_nanmean_is_nan_only_where_every_value_is():
    values = np.array([[1.0, np.nan], [3.0, np.nan]])
    np.testing.assert_array_equal(nanmean(values, axis=0), [2.0, np.nan])
    assert float(nanmean(values)) == 2.0


def test_ordering_is_stated_only_where_the_interval_excludes_zero():
    a, b = np.array([0.9, 0.8, 0.85, 0.95, 0.7, 0.75]), np.array([0.5, 0.4, 0.45, 0.55, 0.5, 0.6])
    assert ordering(paired_bootstrap(a, b), "A", "B") == "A better"
    four = paired_bootstrap(a[:4], b[:4])  # 4/4 the same sign: the interval excludes 0, a sign test gives p = 0.125
    assert four.low > 0 and not four.resolved
    assert ordering(four, "A", "B") == "not resolved on these data (fewer than 6 cases)"
    assert ordering(paired_bootstrap(b, a), "B", "A") == "A better"
    assert ordering(paired_bootstrap(b, a), "B", "A", lower_is_better=True) == "B better"  # a distance: lower wins
    noisy = paired_bootstrap(np.array([0.5, 0.6, 0.4, 0.55]), np.array([0.55, 0.5, 0.45, 0.5]))
    assert noisy.low < 0 < noisy.high and ordering(noisy, "A", "B") == "not resolved on these data"


def test_mean_interval_columns_round_trip_also_through_csv_text():
    values = np.array([0.8, np.nan, 0.7, 0.9, 0.6])
    m = bootstrap_mean(values, n_resamples=200, seed=1)
    columns = mean_interval_columns("dice", m)
    assert list(columns) == ["dice_mean", "dice_sd", "dice_ci_low", "dice_ci_high", "dice_n"]
    assert columns == {"dice_mean": m.mean, "dice_sd": m.sd, "dice_ci_low": m.low, "dice_ci_high": m.high, "dice_n": 4}
    row = {"cases": 5, **columns, "other_n": 1}
    assert mean_interval_from_columns(row, "dice", 5) == m  # dropped: 5 cases less 4 used
    text = {k: repr(v) if isinstance(v, float) else str(v) for k, v in row.items()}  # as csv.DictReader reads it
    assert mean_interval_from_columns(text, "dice", int(text["cases"])) == m
    assert mean_interval_from_columns(row, "dice", 5, confidence=0.9).confidence == 0.9
    bare = mean_interval_columns("", m)
    assert list(bare) == ["mean", "sd", "ci_low", "ci_high", "n"]
    assert mean_interval_from_columns(bare, "", 5) == m
    one = bootstrap_mean(np.array([0.5, np.nan]))  # sd and interval NaN: written and read back as NaN
    back = mean_interval_from_columns(mean_interval_columns("x", one), "x", 2)
    assert (back.mean, back.n, back.dropped) == (0.5, 1, 1) and math.isnan(back.sd) and math.isnan(back.high)
    assert format_mean_interval(back) == format_mean_interval(one)


def test_difference_columns():
    a = np.array([0.9, 0.8, 0.85, 0.95, 0.7, 0.75, np.nan])
    b = np.array([0.5, 0.4, 0.45, 0.55, 0.5, 0.75, 0.5])
    r = paired_bootstrap(a, b, n_resamples=200)
    assert difference_columns(r) == {
        "mean_a": r.mean_a,
        "mean_b": r.mean_b,
        "difference": r.difference,
        "ci_low": r.low,
        "ci_high": r.high,
        "a_higher": 5,
        "b_higher": 0,
        "ties": 1,
        "n": 6,
        "dropped": 1,
        "resolved": True,
    }
    assert list(difference_columns(r))[:5] == ["mean_a", "mean_b", "difference", "ci_low", "ci_high"]
    assert difference_columns(paired_bootstrap(b[:4], a[:4]))["resolved"] is False  # fewer than 6 cases


def _rows() -> list[dict]:
    """Per-case rows of two settings, the cases out of order and the settings interleaved."""
    a = {"c3": 0.9, "c1": 0.8, "c2": 0.85, "c6": 0.95, "c4": 0.7, "c5": 0.75}
    b = {"c5": 0.5, "c1": 0.4, "c2": 0.45, "c3": 0.55, "c4": 0.5, "c6": 0.6}
    rows = [{"setting": "A", "case": c, "dice": v} for c, v in a.items()]
    rows += [{"setting": "B", "case": c, "dice": v} for c, v in b.items()]
    return [rows[i] for i in (6, 0, 7, 1, 8, 2, 9, 3, 10, 4, 11, 5)]


def test_group_by_case_keeps_settings_in_order_and_sorts_the_cases():
    groups = group_by_case(_rows(), lambda r: r["setting"], lambda r: f"setting {r['setting']}")
    assert list(groups) == ["B", "A"]  # order of first appearance
    assert all(list(g) == ["c1", "c2", "c3", "c4", "c5", "c6"] for g in groups.values())
    assert groups["A"]["c3"]["dice"] == 0.9
    with pytest.raises(ValueError, match="^setting A: expected one row per subject, found c3 twice$"):
        group_by_case(_rows() + [_rows()[1]], lambda r: r["setting"], lambda r: f"setting {r['setting']}", "subject")


def test_paired_by_case_is_the_paired_bootstrap_over_sorted_cases():
    groups = group_by_case(_rows(), lambda r: r["setting"], str)
    a, b = groups["A"], groups["B"]
    results = paired_by_case(a, b, ["dice"], ("A", "B"), n_resamples=300, seed=2)
    cases = sorted(a)
    expected = paired_bootstrap(
        np.array([a[c]["dice"] for c in cases]), np.array([b[c]["dice"] for c in cases]), 300, 2
    )
    assert list(results) == ["dice"] and results["dice"] == expected
    assert results["dice"].wins_a == 6 and results["dice"].resolved
    fewer = {c: a[c] for c in cases[1:]}
    with pytest.raises(ValueError, match=r"^A and B: expected the same subjects to pair, found \['c2', .*'c6'\] and"):
        paired_by_case(fewer, b, ["dice"], ("A", "B"), "subjects")


def test_format_resolution_gives_the_half_widths_and_case_counts():
    a, b = np.array([0.9, 0.8, 0.85, 0.95, 0.7, 0.75]), np.array([0.5, 0.4, 0.45, 0.55, 0.5, 0.6])
    six, five = paired_bootstrap(a, b, 300), paired_bootstrap(a[:5], b[:5], 300)
    one = paired_bootstrap(a[:1], b[:1])  # no interval: its NaN half-width left out, its count kept
    halves = sorted([(six.high - six.low) / 2, (five.high - five.low) / 2])
    assert format_resolution([six, five, one], "subjects", "DSC") == (
        f"With 1/5/6 subjects the DSC differences' intervals reach {halves[0]:.3f} to {halves[1]:.3f} either side "
        "of the mean: smaller differences are not resolved."
    )
    assert f"reach {halves[0]:.4f} to" in format_resolution([six, five], "test cases", "Dice", 4)
    assert format_resolution([one], "subjects", "DSC") == "" and format_resolution([], "subjects", "DSC") == ""
