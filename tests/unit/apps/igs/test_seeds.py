"""common.apps.igs.seeds: hand-made comparison folders of three networks: the headline as mean +- sample sd over the
networks (seeded baselines averaged within each network first), the intervals equal to paired_bootstrap on the
network-averaged per-volume differences, the written files, the command line, and the refusals."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from common.apps.igs import INTERVAL_COLUMNS, finding, network_seeds
from common.apps.igs.seeds import VOLUME_CSV, main
from common.utils.stats import paired_bootstrap

VOLUMES = ["P1/ED", "P1/ES", "P2/ED", "P2/ES", "P3/ED", "P3/ES"]
BASE = np.array([0.80, 0.84, 0.78, 0.86, 0.82, 0.81])  # one_sided per volume in network 0
NETWORK_SHIFT = [0.0, 0.02, 0.04]  # each network's offset, the same for every pattern
GAP = {"igs": np.array([-0.05, -0.06, -0.04, -0.07, -0.05, -0.06]), "center": np.array([-0.2] * 6)}
RANDOM_SEEDS = {0: -0.03, 1: -0.01}  # random's draws: -0.02 on average


def _write(path, rows: list[dict]) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def _run(folder, shift: float, metric: str = "mean_fg", volumes: list[str] = VOLUMES) -> None:
    """One network's comparison folder: pattern_comparison.csv (mean over volumes per row) and the per-volume
    Dice of the scored structures (the raw ``mean`` = the volume's mean_fg; two structures, equal here)."""
    folder.mkdir()
    per_run = {("full", None): BASE + 0.1 + shift, ("one_sided", None): BASE + shift}
    per_run.update({(p, None): BASE + shift + gap for p, gap in GAP.items()})
    per_run.update({("random", s): BASE + shift + d for s, d in RANDOM_SEEDS.items()})
    rows, lines = [], []
    for (pattern, seed), values in per_run.items():
        acc = 1 if pattern == "full" else 8
        rows.append(
            {"forward_model": "phase", "protocol": "frozen", "pattern": pattern, "acceleration": acc}
            | {"seed": "" if seed is None else seed, "lines": 4, metric: float(np.mean(values))}
        )
        run = f"phase/frozen/{pattern}/x{acc}/{'-' if seed is None else f'seed{seed}'}"
        lines += [
            {"filename": f"{run}/{v}", "rv": f"{x:.4f}", "lv": f"{x:.4f}", "mean": f"{x:.4f}"}
            for v, x in zip(volumes, values)
        ]
    _write(folder / "pattern_comparison.csv", rows)
    if metric == "mean_fg":
        _write(folder / VOLUME_CSV, lines)


@pytest.fixture
def runs(tmp_path):
    folders = [tmp_path / f"seed{i}" for i in range(3)]
    for folder, shift in zip(folders, NETWORK_SHIFT):
        _run(folder, shift)
    return folders


def test_mean_sd_over_networks_and_intervals_on_network_averaged_volumes(runs, tmp_path):
    out = tmp_path / "combined"
    spread, intervals = network_seeds(runs, out, n_resamples=1000, seed=2)
    by = {(r["pattern"], r["acceleration"]): r for r in spread}
    assert list(by) == [("full", 1), ("one_sided", 8), ("igs", 8), ("center", 8), ("random", 8)]
    igs = by[("igs", 8)]
    means = [float(np.mean(BASE + s + GAP["igs"])) for s in NETWORK_SHIFT]
    assert igs["mean"] == pytest.approx(np.mean(means)) and igs["sd"] == pytest.approx(np.std(means, ddof=1))
    assert (igs["networks"], igs["metric"]) == (3, "mean_fg") and igs["sd"] == pytest.approx(0.02)
    random = by[("random", 8)]  # the seeds' mean within each network, then over networks
    assert random["mean"] == pytest.approx(BASE.mean() - 0.02 + 0.02) and random["sd"] == pytest.approx(0.02)
    assert random["values"] == ";".join(f"{BASE.mean() - 0.02 + s:.4f}" for s in NETWORK_SHIFT)
    assert [(r["pattern"], r["reference"]) for r in intervals] == [
        ("one_sided", "random"),
        ("igs", "one_sided"),
        ("center", "one_sided"),
        ("random", "one_sided"),
    ]
    for r in intervals:
        assert tuple(r) == INTERVAL_COLUMNS
        averaged = {
            p: np.mean([np.round(BASE + s + offset, 4) for s in NETWORK_SHIFT], axis=0)
            for p, offset in {"one_sided": 0.0, "igs": GAP["igs"], "center": GAP["center"], "random": -0.02}.items()
        }  # random: -0.03 and -0.01 per network, each volume's mean
        expected = paired_bootstrap(averaged[r["pattern"]], averaged[r["reference"]], n_resamples=1000, seed=2)
        found = [r["difference"], r["ci_low"], r["ci_high"]]
        assert found == pytest.approx([expected.difference, expected.low, expected.high], abs=1e-9)
        assert (r["wins"], r["losses"], r["n"]) == (expected.wins_a, expected.wins_b, 6)
    assert intervals[1]["resolved"] and intervals[1]["ci_high"] < 0
    written = list(csv.DictReader(open(out / "network_seeds.csv")))
    assert len(written) == 5 and list(written[0]) == list(spread[0])
    assert len(list(csv.DictReader(open(out / "network_seeds_intervals.csv")))) == 4
    md = (out / "network_seeds.md").read_text()
    assert f"3 networks, one per comparison folder ({runs[0]}, {runs[1]}, {runs[2]})" in md
    assert f"| frozen | igs | {igs['mean']:.3f} +- {igs['sd']:.3f} |" in md
    assert "| frozen | full (x1) |" in md and "Per-volume Dice (mean over rv, lv)" in md
    assert "each volume's value first averaged over the 3 networks" in md
    assert f"- {finding(intervals[1])}\n" in md and finding(intervals[1]).endswith(": one_sided better")


def test_command_line(runs, tmp_path, capsys):
    main(["--runs", *map(str, runs), "--out", str(tmp_path / "cli"), "--resamples", "200"])
    assert capsys.readouterr().out.strip() == str(tmp_path / "cli" / "network_seeds.md")
    rows = list(csv.DictReader(open(tmp_path / "cli" / "network_seeds_intervals.csv")))
    spread, intervals = network_seeds(runs, tmp_path / "again", n_resamples=200)
    assert [float(r["ci_low"]) for r in rows] == pytest.approx([r["ci_low"] for r in intervals], abs=1e-12)


def test_classification_runs_have_no_intervals(tmp_path):
    folders = [tmp_path / f"seed{i}" for i in range(2)]
    for folder, shift in zip(folders, NETWORK_SHIFT):
        _run(folder, shift, metric="auc")
    spread, intervals = network_seeds(folders, tmp_path / "out")
    assert intervals == [] and spread[0]["metric"] == "auc"
    md = (tmp_path / "out" / "network_seeds.md").read_text()
    assert "Not computed for the classification task" in md
    assert not (tmp_path / "out" / "network_seeds_intervals.csv").exists()


def test_refusals(runs, tmp_path):
    with pytest.raises(ValueError, match="runs: expected two or more distinct comparison folders"):
        network_seeds(runs[:1], tmp_path / "out")
    odd = tmp_path / "odd"
    _run(odd, 0.0, volumes=["P1/ED", "P1/ES", "P2/ED", "P2/ES", "P3/ED", "P9/ED"])
    with pytest.raises(
        ValueError,
        match=r"(?s)expected the test volumes of .*seed0 in every run.*odd: missing \['P3/ES'\], extra \['P9/ED'\]",
    ):
        network_seeds([runs[0], odd], tmp_path / "out")
    rows = list(csv.DictReader(open(odd / "pattern_comparison.csv")))
    _write(odd / "pattern_comparison.csv", [r for r in rows if r["pattern"] != "center"])
    with pytest.raises(ValueError, match=r"odd: missing \[\('phase', 'frozen', 8, 'center'\)\], extra \[\]"):
        network_seeds([runs[0], odd], tmp_path / "out")
    (runs[1] / VOLUME_CSV).unlink()
    with pytest.raises(FileNotFoundError, match=r"seed1/pattern_comparison_dice_fg_raw\.csv: expected the file"):
        network_seeds(runs, tmp_path / "out")
    assert not (tmp_path / "out").exists()  # refused before anything is written


def test_search_loss_spread_over_networks(tmp_path):
    folders = [tmp_path / f"seed{i}" for i in range(2)]
    for i, (folder, shift) in enumerate(zip(folders, NETWORK_SHIFT)):
        _run(folder, shift)
        path = folder / "pattern_comparison.csv"
        rows = list(csv.DictReader(open(path)))
        for r in rows:  # a loss per pattern and network; random's two draws 0.60 / 0.62 (+ 0.01 per network)
            r["search_loss"] = 0.5 + 0.01 * i + (0.1 + 0.02 * int(r["seed"]) if r["seed"] else 0.0)
        _write(path, rows)
    spread, _ = network_seeds(folders, tmp_path / "out", n_resamples=100)
    loss = {r["pattern"]: r for r in spread if r["metric"] == "search_loss"}
    assert set(loss) == {"one_sided", "igs", "center", "random"}  # not full sampling
    assert loss["random"]["mean"] == pytest.approx(0.615) and loss["igs"]["sd"] == pytest.approx(0.01 / 2**0.5)
    md = (tmp_path / "out" / "network_seeds.md").read_text()
    assert "Search loss on the training slices (lower is better), forward model phase:" in md
    assert "| random | 0.6150 +- 0.0071 |" in md
