"""The lesion report on hand-made per-subject tables: each summary cell the mean, the sample sd (ddof 1) and the
bootstrap interval of the mean over subjects (scipy.stats.bootstrap with the same draws), the stages and the inference
modes paired by subject (differences, intervals and counts by hand / scipy), an ordering written only where the
interval excludes 0 (lower is better for the distances), and the CSV files beside the markdown."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest
from scipy import stats

from common.apps.zoom import SUMMARY_SCORES, finding, paired_differences, summarise_settings, write_reports
from common.utils.stats import N_RESAMPLES

MODELS = ("zoom-in only", "zoom-in & zoom-out")
INFERENCES = ("sliding window", "centre crop")
CASES = ("s3", "s1", "s4", "s6", "s2", "s5")  # not sorted: pairing is by case, not by position


def _row(model: str, inference: str, case: str, **scores: float) -> dict:
    """A per-subject row as LesionEvaluation writes it: every summary score (0.5 unless given) and the voxel counts."""
    row = {"model": model, "inference": inference, "case": case, **{k: 0.5 for k in SUMMARY_SCORES}, **scores}
    row.update(tp=10, pred_voxels=20, label_voxels=20, surface="measured" if not math.isnan(row["hd_mm"]) else "missed")
    return row


def _table() -> list[dict]:
    """Six subjects, two stages, two inference modes. zoom-out adds 0.05 (+- 0.01) to every subject's Dice and takes
    5 (+- 1) mm off its HD; the centre crop changes TPR by +-0.1, alternating in sign (no ordering); one subject's HD
    is NaN with the centre crop."""
    base = {"s1": 0.40, "s2": 0.70, "s3": 0.55, "s4": 0.62, "s5": 0.31, "s6": 0.48}
    jitter = {"s1": 0.01, "s2": -0.01, "s3": 0.0, "s4": 0.005, "s5": -0.005, "s6": 0.0}
    sign = {"s1": 1, "s2": -1, "s3": 1, "s4": -1, "s5": 1, "s6": -1}
    rows = []
    for m, model in enumerate(MODELS):
        for i, inference in enumerate(INFERENCES):
            for case in CASES if i == 0 else CASES[::-1]:
                rows.append(
                    _row(
                        model,
                        inference,
                        case,
                        dice=base[case] + m * (0.05 + jitter[case]),
                        hd_mm=(
                            math.nan
                            if (i, case) == (1, "s2")
                            else 40.0 + 10 * base[case] - m * (5 + 100 * jitter[case])
                        ),
                        tpr=0.6 + i * 0.1 * sign[case] + 0.03 * base[case],
                    )
                )
    return rows


def _scipy_interval(values: np.ndarray) -> tuple[float, float]:
    """Percentile 95 % interval of the mean by scipy, with the resample indices drawn as common.utils.stats draws."""
    ci = stats.bootstrap(
        (values,), np.mean, n_resamples=N_RESAMPLES, method="percentile", rng=np.random.default_rng(0)
    ).confidence_interval
    return float(ci.low), float(ci.high)


def _values(rows: list[dict], model: str, inference: str, key: str) -> np.ndarray:
    """One setting's values of ``key`` by subject, sorted by case."""
    by_case = {r["case"]: float(r[key]) for r in rows if (r["model"], r["inference"]) == (model, inference)}
    return np.array([by_case[c] for c in sorted(by_case)])


def test_summary_is_mean_sample_sd_and_interval_over_subjects():
    rows = _table()
    summary = summarise_settings(rows)
    assert [(s["model"], s["inference"]) for s in summary] == [(m, i) for m in MODELS for i in INFERENCES]
    for s in summary:
        dice = _values(rows, s["model"], s["inference"], "dice")
        mean = dice.sum() / len(dice)
        sample_sd = math.sqrt(((dice - mean) ** 2).sum() / (len(dice) - 1))
        assert s["dice_mean"] == pytest.approx(mean, abs=1e-12)
        assert s["dice_sd"] == pytest.approx(sample_sd, abs=1e-12)
        assert s["dice_sd"] != pytest.approx(np.std(dice), abs=1e-6)  # not the population sd
        assert (s["dice_ci_low"], s["dice_ci_high"]) == pytest.approx(_scipy_interval(dice), abs=1e-12)
        assert s["subjects"] == 6 and s["dice_n"] == 6
    centre = summary[1]  # zoom-in only, centre crop: s2's HD undefined, left out and counted
    hd = _values(rows, *MODELS[:1], INFERENCES[1], "hd_mm")
    assert centre["hd_mm_n"] == 5 and centre["surface_missed"] == 1
    assert centre["hd_mm_mean"] == pytest.approx(np.nanmean(hd)) and centre["hd_mm_sd"] == pytest.approx(
        np.nanstd(hd, ddof=1)
    )
    assert (centre["hd_mm_ci_low"], centre["hd_mm_ci_high"]) == pytest.approx(_scipy_interval(hd[~np.isnan(hd)]))


def test_stages_and_inference_modes_are_paired_by_subject():
    rows = _table()
    comparisons = paired_differences(rows)
    titles = list(dict.fromkeys(c.title for c in comparisons))
    assert titles == [
        "zoom-in & zoom-out vs zoom-in only (sliding window)",
        "zoom-in & zoom-out vs zoom-in only (centre crop)",
        "centre crop vs sliding window (zoom-in only)",
        "centre crop vs sliding window (zoom-in & zoom-out)",
    ]
    assert [c.metric for c in comparisons[: len(SUMMARY_SCORES)]] == list(SUMMARY_SCORES)
    for c in comparisons:
        if c.metric not in ("dice", "hd_mm"):
            continue
        if c.factor == "model":
            a, b = _values(rows, c.a, c.fixed, c.metric), _values(rows, c.b, c.fixed, c.metric)
        else:
            a, b = _values(rows, c.fixed, c.a, c.metric), _values(rows, c.fixed, c.b, c.metric)
        keep = ~(np.isnan(a) | np.isnan(b))
        diff = a[keep] - b[keep]
        assert c.result.difference == pytest.approx(diff.sum() / len(diff), abs=1e-12)
        assert (c.result.low, c.result.high) == pytest.approx(_scipy_interval(diff), abs=1e-12)
        assert (c.result.wins_a, c.result.wins_b, c.result.n) == ((diff > 0).sum(), (diff < 0).sum(), len(diff))
        assert c.result.dropped == (~keep).sum()
    dice = comparisons[0].result  # zoom-out + 0.05 +- 0.01 on every subject
    assert dice.difference == pytest.approx(0.05, abs=1e-12) and dice.wins_a == 6


def test_an_ordering_is_stated_only_where_the_interval_excludes_0():
    comparisons = paired_differences(_table())
    stage = [c for c in comparisons if c.title == "zoom-in & zoom-out vs zoom-in only (sliding window)"]
    by_metric = {c.metric: c.result for c in stage}
    assert by_metric["dice"].low > 0 and by_metric["hd_mm"].high < 0  # both favour zoom-out
    sentence = finding(stage)
    assert sentence.startswith(
        "zoom-in & zoom-out vs zoom-in only (sliding window), 6 subjects: zoom-in & zoom-out better on DSC (0.050 "
    )
    assert (
        "HD (mm) (-5.0 [" in sentence and "], 0/6 higher)" in sentence and "zoom-in only better" not in sentence
    )  # lower HD favours zoom-out
    assert sentence.endswith(
        "; not resolved on these data: ASSD (mm), TPR, precision, lesion-wise F1, lesion count difference, volume "
        "difference (voxels), volume difference (ml), s / subject"
    )
    crop = [c for c in comparisons if c.title == "centre crop vs sliding window (zoom-in only)"]
    tpr = next(c.result for c in crop if c.metric == "tpr")
    assert tpr.low < 0 < tpr.high  # +-0.1 alternating: not resolved
    assert finding(crop) == (
        "centre crop vs sliding window (zoom-in only), 6 subjects: not resolved on these data: "
        + ", ".join(s.label for s in SUMMARY_SCORES.values())
    )


def test_reports_hold_the_intervals_in_markdown_and_csv(tmp_path):
    rows = _table()
    paths = write_reports(rows, tmp_path)
    summary = list(csv.DictReader(open(paths["summary"])))
    dice = _values(rows, MODELS[0], INFERENCES[0], "dice")
    low, high = _scipy_interval(dice)
    assert float(summary[0]["dice_ci_low"]) == pytest.approx(low) and float(
        summary[0]["dice_ci_high"]
    ) == pytest.approx(high)
    report = paths["report"].read_text()
    cell = f"{dice.mean():.3f} +- {np.std(dice, ddof=1):.3f} [{low:.3f}, {high:.3f}]"
    assert f"| zoom-in only | sliding window | 6 | 0.500 | {cell} |" in report
    differences = list(csv.DictReader(open(paths["differences"])))
    assert len(differences) == 4 * len(SUMMARY_SCORES)
    first = differences[0]
    diff = _values(rows, MODELS[1], INFERENCES[0], "dice") - dice
    d_low, d_high = _scipy_interval(diff)
    assert (first["a"], first["b"], first["fixed"], first["metric"]) == (*MODELS[::-1], INFERENCES[0], "dice")
    assert float(first["ci_low"]) == pytest.approx(d_low) and float(first["ci_high"]) == pytest.approx(d_high)
    assert (first["a_higher"], first["b_higher"], first["resolved"], first["ordering"]) == (
        "6",
        "0",
        "True",
        "zoom-in & zoom-out better",
    )
    line = f"| {diff.mean():.3f} [{d_low:.3f}, {d_high:.3f}], 6/6 | zoom-in & zoom-out better |"
    assert "| zoom-in & zoom-out | zoom-in only | sliding window | DSC | " in report and line in report
    assert "- zoom-in & zoom-out vs zoom-in only (sliding window), 6 subjects: zoom-in & zoom-out better" in report


def test_one_setting_has_nothing_to_compare(tmp_path):
    rows = [r for r in _table() if (r["model"], r["inference"]) == (MODELS[0], INFERENCES[0])]
    paths = write_reports(rows, tmp_path)
    assert "differences" not in paths and not (tmp_path / "lesion_differences.csv").exists()
    assert "nothing to compare" in paths["report"].read_text()


def test_settings_with_other_subjects_are_refused():
    rows = [r for r in _table() if not (r["model"] == MODELS[1] and r["case"] == "s4")]
    with pytest.raises(ValueError, match="expected the same subjects to pair"):
        paired_differences(rows)
