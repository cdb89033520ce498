"""A summary over network seeds: mean and sample sd over the networks of each row and value (NaN left out), checked
by hand; rows must match across runs; the CLI writes the CSV and markdown and exits with a message on bad input."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest

from common.utils.network_seeds import main, network_seeds, spread_over_runs


def _table(shift: float, nan_assd: bool = False) -> list[dict]:
    return [
        {"score": "dice", "mean": 0.70 + shift, "sd": 0.1},
        {"score": "assd_mm", "mean": math.nan if nan_assd else 2.0 + 10 * shift, "sd": 0.5},
    ]


def _write(folder, rows) -> None:
    folder.mkdir(parents=True)
    with open(folder / "summary.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def test_mean_and_sample_sd_over_networks_by_hand():
    shifts = [0.0, 0.02, 0.07]
    rows = spread_over_runs([_table(s, nan_assd=(s == 0.07)) for s in shifts], ["score"], ["mean"])
    dice, assd = rows
    values = [0.70 + s for s in shifts]
    mean = sum(values) / 3
    assert dice["score"] == "dice" and dice["networks"] == 3 and dice["mean_n"] == 3
    assert dice["mean_mean"] == pytest.approx(mean)
    assert dice["mean_sd"] == pytest.approx(math.sqrt(sum((v - mean) ** 2 for v in values) / 2))
    assert dice["mean_sd"] != pytest.approx(np.std(values))  # not the population sd
    assert dice["mean_values"] == "0.7000;0.7200;0.7700"
    assert assd["mean_n"] == 2 and assd["mean_mean"] == pytest.approx(2.1)  # the NaN network left out
    assert assd["mean_values"] == "2.0000;2.2000;nan"


def test_rows_must_match_and_columns_exist():
    with pytest.raises(ValueError, match=r"b: expected the rows of a .*missing \[\('assd_mm',\)\], extra \[\]"):
        spread_over_runs([_table(0), _table(0)[:1]], ["score"], ["mean"], names=["a", "b"])
    with pytest.raises(ValueError, match=r"a: expected rows with the columns \['score', 'median'\].*\['median'\]"):
        spread_over_runs([_table(0), _table(0)], ["score"], ["median"], names=["a", "b"])
    with pytest.raises(ValueError, match="expected two or more"):
        spread_over_runs([_table(0)], ["score"], ["mean"])


def test_cli_writes_csv_and_markdown_and_refuses_a_missing_file(tmp_path, capsys):
    runs = [tmp_path / f"seed{s}" for s in range(3)]
    for run, shift in zip(runs, (0.0, 0.01, 0.02)):
        _write(run, _table(shift))
    out = tmp_path / "combined"
    main(["--runs", *map(str, runs), "--table", "summary.csv", "--ids", "score", "--values", "mean", "--out", str(out)])
    written = list(csv.DictReader(open(out / "network_seeds.csv")))
    assert [r["score"] for r in written] == ["dice", "assd_mm"] and float(written[0]["mean_mean"]) == pytest.approx(
        0.71
    )
    md = (out / "network_seeds.md").read_text()
    assert "3 networks, one per evaluation folder" in md and "| dice | 0.71 +- 0.01 (3) |" in md
    with pytest.raises(FileNotFoundError, match=r"seed9/summary.csv: expected the summary table"):
        network_seeds([runs[0], tmp_path / "seed9"], "summary.csv", ["score"], ["mean"], out)
    with pytest.raises(SystemExit, match="error: .*seed9/summary.csv"):
        main(
            ["--runs", str(runs[0]), str(tmp_path / "seed9"), "--table", "summary.csv", "--ids", "score"]
            + ["--values", "mean", "--out", str(out)]
        )
