"""Model cards cannot drift from their reports: every report a card embeds (between ``<!-- begin: <file> -->`` and
``<!-- end: <file> -->``, the file under the bundle's ``docs/``) is that file, headings one level down, and the
findings in such a report are the sentences :func:`common.apps.igs.finding` makes of the interval CSV beside it,
and a difference with its interval quoted in a card's prose is a row of one of its reports."""

from __future__ import annotations

import csv
import re
from pathlib import Path

import pytest

from common.apps.igs import finding
from tests.bundles.conftest import REPO

BLOCK = re.compile(r"<!-- begin: (?P<file>[^ ]+) -->\n(?P<body>.*?)<!-- end: (?P=file) -->", re.S)
CARDS = sorted(REPO.glob("bundles/*/docs/README.md"))


def embedded(text: str) -> str:
    """A report as a card embeds it: every heading one level down (a card has one top-level title)."""
    return "".join(f"#{line}" if line.startswith("#") else line for line in text.splitlines(keepends=True))


def blocks(card: Path) -> list[tuple[Path, str]]:
    return [(card.parent / m["file"], m["body"]) for m in BLOCK.finditer(card.read_text())]


@pytest.mark.parametrize("card", CARDS, ids=lambda p: p.parent.parent.name)
def test_embedded_reports_are_the_report_files(card):
    for path, body in blocks(card):
        assert path.is_file(), f"{card}: embeds {path}, which does not exist"
        assert body == embedded(path.read_text()), f"{card}: the block of {path.name} differs from the file"


@pytest.mark.parametrize("card", CARDS, ids=lambda p: p.parent.parent.name)
def test_findings_are_generated_from_the_interval_rows(card):
    for path, _ in blocks(card):
        intervals = path.with_name(path.stem + "_intervals.csv")
        if not intervals.is_file():
            continue
        with open(intervals, newline="") as f:
            rows = list(csv.DictReader(f))
        lines = [line[2:] for line in path.read_text().splitlines() if line.startswith("- x")]
        assert rows and lines == [finding(r) for r in rows], f"{path}: findings differ from {intervals.name}"


INTERVAL = re.compile(r"(-?\d+\.\d{3}) \[(-?\d+\.\d{3}), (-?\d+\.\d{3})\]")


def quoted_intervals(card: Path) -> list[tuple[str, str, str]]:
    """Every ``"d [low, high]"`` a card's prose quotes (outside its embedded reports), three decimals each."""
    return INTERVAL.findall(BLOCK.sub("", card.read_text()))


def interval_rows(card: Path) -> set[tuple[str, str, str]]:
    """``(value, low, high)`` at three decimals of every interval in the CSVs under the card's results: a difference
    (``difference``, ``ci_low``, ``ci_high``: IGS' ``*_intervals.csv``, the ``*_differences.csv`` of the reports
    built on ``common.utils.stats``) or a mean (``<score>_mean``, ``<score>_ci_low``, ``<score>_ci_high``: their
    summaries)."""
    out = set()
    for path in sorted((card.parent / "results").glob("*.csv")):
        with open(path, newline="") as f:
            for r in csv.DictReader(f):
                for low in (k for k in r if k.endswith("ci_low")):
                    base = low[: -len("ci_low")]
                    value = f"{base}mean" if base else "difference"
                    if value in r and f"{base}ci_high" in r and r[low] not in ("", "nan"):
                        out.add(tuple(f"{float(r[k]):.3f}" for k in (value, low, f"{base}ci_high")))
    return out


@pytest.mark.parametrize("card", CARDS, ids=lambda p: p.parent.parent.name)
def test_intervals_quoted_in_prose_are_rows_of_the_reports(card):
    """A difference with its interval, quoted anywhere in the card's text, is one of its reports' interval rows."""
    rows = interval_rows(card)
    if not rows:
        return
    stray = [q for q in quoted_intervals(card) if q not in rows]
    assert not stray, f"{card}: intervals quoted that no report under docs/results/ has: {stray}"


def test_embedding_and_findings_checks_catch_a_drift(tmp_path):
    """The checks above on a hand-made card: an edited number in the card or in a finding is caught."""
    row = {
        "forward_model": "phase",
        "protocol": "frozen",
        "acceleration": "16",
        "pattern": "igs",
        "reference": "one_sided",
        "mean": "0.30",
        "reference_mean": "0.38",
        "difference": "-0.08",
        "ci_low": "-0.10",
        "ci_high": "-0.05",
        "wins": "2",
        "losses": "18",
        "n": "20",
        "dropped": "0",
    }
    text = f"# Report\n\n**Findings**\n\n- {finding(row)}\n"
    assert finding(row) == "x16 phase frozen: igs - one_sided = -0.080 [-0.100, -0.050], 2/20 volumes: one_sided better"
    card = tmp_path / "README.md"
    card.write_text(f"# Card\n<!-- begin: r.md -->\n{embedded(text)}<!-- end: r.md -->\n")
    (tmp_path / "r.md").write_text(text)
    ((path, body),) = blocks(card)
    assert body == embedded(path.read_text()) and body.startswith("## Report")
    (tmp_path / "r.md").write_text(text.replace("-0.080", "-0.070"))
    assert body != embedded(path.read_text())
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "r_intervals.csv").write_text(",".join(row) + "\n" + ",".join(row.values()) + "\n")
    card.write_text("Prose: -0.080 [-0.100, -0.050] holds.\n")
    assert quoted_intervals(card) == [("-0.080", "-0.100", "-0.050")] and set(quoted_intervals(card)) <= interval_rows(
        card
    )
    card.write_text("Prose: -0.080 [-0.100, -0.040] drifted.\n")
    assert not set(quoted_intervals(card)) <= interval_rows(card)
