"""The interactive evaluation's reports against independent computation: per method and round the mean, the sample
sd and the percentile bootstrap interval of the mean over cases; the paired per-case differences (mean difference,
interval, wins) with an ordering stated only where the interval excludes 0 (lower ASSD better); the CSV files and
the markdown carry those numbers; and the figure."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest

from common.apps.deepigeos import (
    Pair,
    difference_rows,
    markdown_report,
    paired_comparisons,
    plot_dice_vs_clicks,
    summarise_rounds,
    write_reports,
)

METHODS = ["P-Net", "P-Net + CRF-Net(f)", "R-Net + CRF-Net(fu)", "Balls at the clicks, no network"]
N_RESAMPLES = 500  # fewer than the tables' 4,000: the reference below loops over them


def percentile_bootstrap(values: np.ndarray, n_resamples: int = N_RESAMPLES, seed: int = 0) -> tuple[float, float]:
    """The percentile 95 % interval of the mean, one resample at a time (``values`` NaN-free, in case order)."""
    rng = np.random.default_rng(seed)
    index = rng.integers(0, len(values), size=(n_resamples, len(values)))
    means = sorted(sum(values[i] for i in row) / len(values) for row in index)
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def case_rows() -> list[dict]:
    """8 cases: R-Net + CRF-Net(fu) above the balls on every case in round 1 (Dice +0.02..+0.05, ASSD lower), in
    round 2 equal on average (differences of both signs); CRF-Net(f) against P-Net of both signs; ASSD of case c0 of
    the balls undefined (empty mask). Rows deliberately not in case order."""
    rng = np.random.default_rng(3)
    auto = rng.uniform(0.6, 0.8, 8)
    rows = []
    for k in reversed(range(8)):
        case = f"c{k}"
        d1 = 0.02 + 0.03 * k / 7
        d2 = 0.01 * (-1) ** k * (1 + k % 3)
        values = {
            ("P-Net", 0): (auto[k], 3.0 + k),
            ("P-Net + CRF-Net(f)", 0): (auto[k] + 0.01 * (-1) ** k, 3.0 + k - 0.1 * (-1) ** k),
            ("R-Net + CRF-Net(fu)", 1): (auto[k] + 0.05 + d1, 2.0 + 0.1 * k),
            ("R-Net + CRF-Net(fu)", 2): (auto[k] + 0.10 + d2, 1.5 + 0.1 * k),
            ("Balls at the clicks, no network", 1): (auto[k] + 0.05, 2.5 + 0.1 * k),
            ("Balls at the clicks, no network", 2): (auto[k] + 0.10, math.nan if k == 0 else 1.5 + 0.1 * k - d2),
        }
        for (method, rnd), (dice, assd) in values.items():
            rows.append(
                {"case": case, "method": method, "round": rnd, "clicks": 4 * rnd + k % 2, "clicks_total": 9 * rnd}
                | {"dice": dice, "assd_mm": assd, "seconds": 0.25 * (1 + k % 2)}
            )
    return rows


def column(rows: list[dict], method: str, rnd: int, key: str) -> np.ndarray:
    by_case = {r["case"]: r[key] for r in rows if r["method"] == method and r["round"] == rnd}
    return np.array([by_case[c] for c in sorted(by_case)], dtype=float)


PAIRS = [
    Pair("CRF-Net(f)", "P-Net + CRF-Net(f)", 0, "P-Net", 0),
    Pair("floor", "R-Net + CRF-Net(fu)", 1, "Balls at the clicks, no network", 1),
    Pair("floor", "R-Net + CRF-Net(fu)", 2, "Balls at the clicks, no network", 2),
    Pair("from the start", "R-Net + CRF-Net(fu)", 2, "P-Net + CRF-Net(f)", 0),
]


def test_summary_has_sample_sd_and_bootstrap_interval_of_the_mean() -> None:
    rows = case_rows()
    summary = summarise_rounds(rows, n_resamples=N_RESAMPLES)
    assert [(r["method"], r["round"]) for r in summary] == [  # methods as they first appear, rounds ascending
        ("P-Net", 0),
        ("P-Net + CRF-Net(f)", 0),
        ("R-Net + CRF-Net(fu)", 1),
        ("R-Net + CRF-Net(fu)", 2),
        ("Balls at the clicks, no network", 1),
        ("Balls at the clicks, no network", 2),
    ]
    for r in summary:
        for key in ("dice", "assd_mm", "clicks", "seconds"):
            values = column(rows, r["method"], r["round"], key)
            values = values[~np.isnan(values)]
            assert r[f"{key}_n"] == len(values) and r["cases"] == 8
            assert r[f"{key}_mean"] == pytest.approx(sum(values) / len(values))
            sd = math.sqrt(sum((v - values.mean()) ** 2 for v in values) / (len(values) - 1))  # ddof 1, not 0
            assert r[f"{key}_sd"] == pytest.approx(sd)
            assert (r[f"{key}_ci_low"], r[f"{key}_ci_high"]) == pytest.approx(percentile_bootstrap(values))
    balls = next(r for r in summary if r["method"] == "Balls at the clicks, no network" and r["round"] == 2)
    assert balls["assd_mm_n"] == 7  # the empty mask's undefined ASSD left out


def test_paired_differences_intervals_wins_and_orderings() -> None:
    rows = case_rows()
    comparisons = paired_comparisons(rows, PAIRS, n_resamples=N_RESAMPLES)
    assert [(c.pair, c.metric) for c in comparisons] == [(p, m) for p in PAIRS for m in ("dice", "assd_mm")]
    for c in comparisons:
        a = column(rows, c.pair.a, c.pair.round_a, c.metric)
        b = column(rows, c.pair.b, c.pair.round_b, c.metric)
        keep = ~(np.isnan(a) | np.isnan(b))
        diff = a[keep] - b[keep]
        r = c.result
        assert r.n == keep.sum() and r.dropped == (~keep).sum()
        assert r.difference == pytest.approx(diff.mean()) and r.mean_a == pytest.approx(a[keep].mean())
        assert (r.wins_a, r.wins_b, r.ties) == ((diff > 0).sum(), (diff < 0).sum(), (diff == 0).sum())
        assert (r.low, r.high) == pytest.approx(percentile_bootstrap(diff))
    found = {(c.pair.round_a, c.pair.heading, c.metric): c for c in comparisons}
    # round 1: the network beats the floor on every case, Dice higher and ASSD lower: both resolved, for a
    assert found[(1, "floor", "dice")].ordering == "R-Net + CRF-Net(fu), round 1 better"
    assert found[(1, "floor", "dice")].result.wins_a == 8
    assert found[(1, "floor", "assd_mm")].result.high < 0  # a lower ASSD: a negative difference favours a
    assert found[(1, "floor", "assd_mm")].ordering == "R-Net + CRF-Net(fu), round 1 better"
    # round 2: differences of both signs averaging near 0: no ordering
    assert found[(2, "floor", "dice")].ordering == "not resolved on these data"
    assert found[(2, "floor", "assd_mm")].result.dropped == 1
    # an ordering is written exactly where the interval excludes 0
    for c in comparisons:
        assert (c.ordering != "not resolved on these data") == (c.result.low > 0 or c.result.high < 0)


def test_csv_and_markdown_carry_the_intervals(tmp_path) -> None:
    rows = case_rows()
    settings = {"start": "P-Net + CRF-Net(f)", "max_clicks": 10, "rounds": 2}
    summary = write_reports(tmp_path, rows, METHODS, PAIRS, settings, n_resamples=N_RESAMPLES, seed=0)
    assert summary == summarise_rounds(rows, n_resamples=N_RESAMPLES)
    differences = list(csv.DictReader(open(tmp_path / "interactive_evaluation_differences.csv")))
    expected = difference_rows(paired_comparisons(rows, PAIRS, n_resamples=N_RESAMPLES))
    assert len(differences) == len(expected) == 2 * len(PAIRS)
    for got, want in zip(differences, expected):
        assert got["a"] == want["a"] and got["metric"] == want["metric"] and got["ordering"] == want["ordering"]
        assert float(got["ci_low"]) == pytest.approx(want["ci_low"]) and int(got["a_higher"]) == want["a_higher"]
        assert got["lower_is_better"] == str(want["metric"] == "assd_mm")
    assert len(list(csv.DictReader(open(tmp_path / "interactive_evaluation_cases.csv")))) == len(rows)
    md = (tmp_path / "interactive_evaluation.md").read_text()
    r1 = column(rows, "R-Net + CRF-Net(fu)", 1, "dice")
    low, high = percentile_bootstrap(r1)
    sd = r1.std(ddof=1)
    assert f"| R-Net + CRF-Net(fu) | 1 | 4.5 | 9.0 | {r1.mean():.4f} +- {sd:.4f} [{low:.4f}, {high:.4f}] |" in md
    diff = r1 - column(rows, "Balls at the clicks, no network", 1, "dice")
    low, high = percentile_bootstrap(diff)
    cell = f"{diff.mean():.4f} [{low:.4f}, {high:.4f}], 8/8"
    assert f"| {cell} | R-Net + CRF-Net(fu), round 1 better |" in md
    assert f"Dice: R-Net + CRF-Net(fu), round 1 better ({cell})" in md  # the finding, from the same numbers
    assert "R-Net + CRF-Net(fu), round 2 vs Balls at the clicks, no network, round 2, 8 cases: Dice: not resolved" in md
    assert "### floor" in md and "### CRF-Net(f)" in md and "500 bootstrap resamples" in md
    assert "With 8 test cases the Dice differences' intervals reach" in md


def test_no_pair_to_compare_says_so(tmp_path) -> None:
    rows = [r for r in case_rows() if r["method"] == "P-Net"]
    summary = summarise_rounds(rows, n_resamples=N_RESAMPLES)
    assert paired_comparisons(rows, PAIRS) == []
    md = markdown_report(summary, [], ["P-Net"], {"start": "P-Net"}, n_resamples=N_RESAMPLES)
    assert "nothing to compare" in md and "| P-Net | 0 |" in md
    assert plot_dice_vs_clicks(summarise_rounds(case_rows()), METHODS, tmp_path / "plot.png").stat().st_size > 1000


def test_pairs_must_hold_the_same_cases_and_one_row_per_case() -> None:
    rows = [r for r in case_rows() if not (r["method"] == "P-Net" and r["case"] == "c3")]
    with pytest.raises(ValueError, match=r"P-Net \+ CRF-Net\(f\) and P-Net: expected the same cases to pair"):
        paired_comparisons(rows, PAIRS[:1])
    with pytest.raises(ValueError, match="P-Net, round 0: expected one row per case, found c1 twice"):
        summarise_rounds(case_rows() + [next(r for r in case_rows() if r["case"] == "c1")])
