"""The interactive evaluation's tables: means and sds per method and round against NumPy (ASSD NaN left out), the
orderings stated with their numbers and marked when they fail, and the figure."""

from __future__ import annotations

import math

import numpy as np
import pytest

from common.apps.deepigeos import markdown_report, orderings, plot_dice_vs_clicks, summarise_rounds

METHODS = ["P-Net", "P-Net + CRF-Net(f)", "R-Net", "R-Net + CRF-Net(fu)", "R-Net, Euclidean maps"]


def rows(dice: dict[tuple[str, int], list[float]]) -> list[dict]:
    out = []
    for (method, rnd), values in dice.items():
        for k, v in enumerate(values):
            out.append(
                {"case": f"c{k}", "method": method, "round": rnd, "clicks": 3 * rnd + k, "clicks_total": 5 * rnd}
                | {"dice": v, "assd_mm": math.nan if k == 0 else 2.0 + k, "seconds": 0.5}
            )
    return out


GOOD = {
    ("P-Net", 0): [0.70, 0.80],
    ("P-Net + CRF-Net(f)", 0): [0.72, 0.82],
    ("R-Net", 1): [0.80, 0.86],
    ("R-Net", 2): [0.85, 0.88],
    ("R-Net + CRF-Net(fu)", 1): [0.82, 0.87],
    ("R-Net + CRF-Net(fu)", 2): [0.86, 0.90],
    ("R-Net, Euclidean maps", 1): [0.78, 0.84],
    ("R-Net, Euclidean maps", 2): [0.80, 0.85],
}


def test_summary_means_and_sds_per_method_and_round() -> None:
    summary = summarise_rounds(rows(GOOD))
    assert [(r["method"], r["round"]) for r in summary] == list(GOOD)
    r = next(s for s in summary if s["method"] == "R-Net" and s["round"] == 2)
    assert r["cases"] == 2 and r["dice_mean"] == pytest.approx(np.mean([0.85, 0.88]))
    assert r["dice_sd"] == pytest.approx(np.std([0.85, 0.88]))
    assert r["clicks_mean"] == pytest.approx(6.5) and r["clicks_total_mean"] == pytest.approx(10.0)
    assert r["assd_mm_mean"] == pytest.approx(3.0) and r["assd_cases"] == 1  # the NaN case left out


def test_orderings_hold_on_good_numbers_and_fail_visibly() -> None:
    summary = summarise_rounds(rows(GOOD))
    checks = orderings(summary, METHODS)
    assert len(checks) == 6 and all(holds for _, holds in checks)
    assert checks[0][0] == "P-Net + CRF-Net(f) >= P-Net: 0.7700 vs 0.7500"
    bad = dict(GOOD)
    bad[("R-Net", 2)] = [0.70, 0.70]  # falls after round 1, and below the Euclidean R-Net
    checks = dict(orderings(summarise_rounds(rows(bad)), METHODS))
    assert checks["R-Net: Dice does not fall from round to round: 0.7700 -> 0.8300 -> 0.7000"] is False
    rounds = "round 1: 0.8300 vs 0.8100, round 2: 0.7000 vs 0.8250"
    assert checks[f"R-Net on geodesic maps >= on Euclidean maps, round by round: {rounds}"] is False
    md = markdown_report(summarise_rounds(rows(bad)), METHODS, {"start": "P-Net + CRF-Net(f)", "max_clicks": 10})
    assert (
        "- FAILS: R-Net: Dice does not fall" in md
        and "| R-Net | 2 | 6.5 | 10.0 | 0.7000 +- 0.0000 | 3.00 +- 0.00 | 1 | 0.50 |" in md
    )


def test_orderings_without_the_ablation_say_not_evaluated(tmp_path) -> None:
    partial = {k: v for k, v in GOOD.items() if k[0] != "R-Net, Euclidean maps"}
    summary = summarise_rounds(rows(partial))
    checks = orderings(summary, METHODS[:4])
    assert checks[-1] == ("R-Net on geodesic maps >= on Euclidean maps: not evaluated (no Euclidean R-Net)", None)
    assert "- not evaluated: R-Net on geodesic maps" in markdown_report(summary, METHODS[:4], {"start": "P-Net"})
    assert plot_dice_vs_clicks(summary, METHODS[:4], tmp_path / "plot.png").stat().st_size > 1000
