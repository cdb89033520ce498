"""common.apps.igs.intervals: per-volume lines to cells (seeded draws averaged per volume), the best baseline of a
cell, every interval row equal to paired_bootstrap on the same volumes, the CSV columns, and the generated findings
and markdown for a resolved and an unresolved cell."""

from __future__ import annotations

import numpy as np
import pytest

from common.apps.igs import BASELINES, INTERVAL_COLUMNS, finding, intervals_markdown, paired_intervals, per_volume
from common.apps.igs.intervals import intervals_unavailable, rank_baselines
from common.utils.stats import paired_bootstrap

VOLUMES = [f"P{i}/{phase}" for i in range(1, 5) for phase in ("ED", "ES")]  # 8 volumes
ONE_SIDED = np.array([0.80, 0.82, 0.78, 0.85, 0.79, 0.81, 0.83, 0.80])
CELL = ("phase", "frozen", 16)


def _lines() -> dict[str, float]:
    """One cell (phase, frozen, x16): one_sided the best baseline; random (two seeds) next; igs clearly below
    one_sided on every volume; loupe above on some volumes, below on others; plus full sampling at x1."""
    rng = np.random.default_rng(0)
    patterns = {
        "-": {
            "igs": ONE_SIDED - 0.06 + rng.normal(0, 0.01, 8),
            "loupe": ONE_SIDED + np.array([0.02, -0.03, 0.01, -0.02, 0.03, -0.01, 0.02, -0.02]),
            "center": ONE_SIDED - 0.20,
            "one_sided": ONE_SIDED,
        },
        "seed0": {"random": ONE_SIDED - 0.03, "equispaced": ONE_SIDED - 0.10},
        "seed1": {"random": ONE_SIDED - 0.05, "equispaced": ONE_SIDED - 0.12},
    }
    lines = {f"phase/frozen/full/x1/-/{v}": 0.9 for v in VOLUMES}
    for seed, values in patterns.items():
        for pattern, v in values.items():
            lines.update({f"phase/frozen/{pattern}/x16/{seed}/{name}": float(x) for name, x in zip(VOLUMES, v)})
    return lines


def test_per_volume_averages_seeds_and_refuses_bad_lines():
    values = per_volume(_lines())
    assert list(values) == [("phase", "frozen", 1), CELL]
    assert list(values[CELL]) == ["igs", "loupe", "center", "one_sided", "random", "equispaced"]
    np.testing.assert_allclose([values[CELL]["random"][v] for v in VOLUMES], ONE_SIDED - 0.04)  # mean of 2 seeds
    with pytest.raises(ValueError, match=r"'phase/frozen/igs/16/-/P1/ED': expected a per-volume line"):
        per_volume({"phase/frozen/igs/16/-/P1/ED": 0.5})
    with pytest.raises(ValueError, match=r"x4 phase frozen: expected the same volumes for every pattern"):
        per_volume({"phase/frozen/igs/x4/-/P1/ED": 0.5, "phase/frozen/center/x4/-/P2/ED": 0.5})


def test_best_baseline_and_intervals_are_paired_bootstrap_on_the_volumes():
    values = per_volume(_lines())
    assert rank_baselines(values[CELL], BASELINES) == ["one_sided", "random", "equispaced", "center"]
    assert rank_baselines({"random": {"a": 0.5}, "center": {"a": 0.5}}, BASELINES) == ["center", "random"]  # tie
    rows = paired_intervals(values, BASELINES, "mean_fg", n_resamples=2000, seed=4)
    assert [(r["pattern"], r["reference"]) for r in rows] == [
        ("igs", "one_sided"),
        ("loupe", "one_sided"),
        ("center", "one_sided"),
        ("one_sided", "random"),  # the best baseline against the next best
        ("random", "one_sided"),
        ("equispaced", "one_sided"),
        ("igs", "loupe"),  # the learned patterns against each other
    ]  # full sampling (x1, no baseline) gives none
    for r in rows:
        assert tuple(r) == INTERVAL_COLUMNS
        assert (r["forward_model"], r["protocol"], r["acceleration"], r["metric"]) == (*CELL, "mean_fg")
        a = np.array([values[CELL][r["pattern"]][v] for v in sorted(VOLUMES)])
        b = np.array([values[CELL][r["reference"]][v] for v in sorted(VOLUMES)])
        expected = paired_bootstrap(a, b, n_resamples=2000, seed=4)
        assert (r["mean"], r["reference_mean"], r["difference"]) == (
            expected.mean_a,
            expected.mean_b,
            expected.difference,
        )
        assert (r["ci_low"], r["ci_high"]) == (expected.low, expected.high)
        assert (r["wins"], r["losses"], r["n"], r["dropped"]) == (expected.wins_a, expected.wins_b, 8, 0)
        assert r["resolved"] == (expected.low > 0 or expected.high < 0)
    igs, loupe = rows[0], rows[1]
    assert igs["resolved"] and igs["ci_high"] < 0 and igs["wins"] == 0
    assert not loupe["resolved"] and loupe["ci_low"] < 0 < loupe["ci_high"]
    one_cell = {CELL: {"center": {"a": 0.5, "b": 0.6}}}  # a lone baseline: nothing to compare
    assert paired_intervals(one_cell, BASELINES, "mean_fg") == []


def test_findings_and_markdown_are_generated_from_the_numbers():
    rows = paired_intervals(per_volume(_lines()), BASELINES, "mean_fg")
    igs, loupe = rows[0], rows[1]
    numbers = f"{igs['difference']:.3f} [{igs['ci_low']:.3f}, {igs['ci_high']:.3f}], 0/8 volumes"
    assert finding(igs) == f"x16 phase frozen: igs - one_sided = {numbers}: one_sided better"
    numbers = f"{loupe['difference']:.3f} [{loupe['ci_low']:.3f}, {loupe['ci_high']:.3f}], {loupe['wins']}/8 volumes"
    assert finding(loupe) == f"x16 phase frozen: loupe - one_sided = {numbers}: not resolved on these data"
    better = dict(igs, pattern="one_sided", reference="igs", difference=0.06, ci_low=0.05, ci_high=0.07, wins=8)
    better["losses"] = 0
    assert finding(better).endswith("= 0.060 [0.050, 0.070], 8/8 volumes: one_sided better")
    md = intervals_markdown(rows, "Dice (mean over rv, myocardium, lv)", BASELINES)
    assert md.startswith("## Paired differences against the best baseline\n")
    assert "Per-volume Dice (mean over rv, myocardium, lv), paired by volume:" in md
    assert "4,000 seeded bootstrap resamples" in md and "With 8 volumes the intervals' half-widths run from" in md
    table_row = (
        f"| x16 | phase | frozen | igs | one_sided | {igs['mean']:.3f} | {igs['reference_mean']:.3f} | "
        f"{igs['difference']:.3f} [{igs['ci_low']:.3f}, {igs['ci_high']:.3f}], 0/8 |"
    )
    assert table_row in md
    assert f"- {finding(igs)}\n" in md and f"- {finding(loupe)}\n" in md
    averaged = intervals_markdown(rows, "Dice", BASELINES, networks=3)
    assert "each volume's value first averaged over the 3 networks" in averaged
    assert "No cell holds a baseline" in intervals_markdown([], "Dice", BASELINES)
    assert "Not computed for the classification task" in intervals_unavailable("classification")
