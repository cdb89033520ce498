"""Paired per-volume intervals of the pattern comparison, as every results table reports them: in each (forward
model, protocol, acceleration) cell every pattern against the best baseline, and the best baseline against the next
best; the table, the CSV rows and the one-line findings are all generated from the numbers here."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence

import numpy as np

from common.utils.stats import (
    MIN_CASES,
    N_RESAMPLES,
    PairedDifference,
    format_difference,
    nanmean,
    ordering,
    paired_bootstrap,
)

__all__ = [
    "INTERVAL_COLUMNS",
    "INTERVALS_TITLE",
    "per_volume",
    "rank_baselines",
    "paired_intervals",
    "finding",
    "intervals_markdown",
    "intervals_unavailable",
]

Cell = tuple[str, str, int]  # (forward model, protocol, acceleration)
Values = dict[Cell, dict[str, dict[str, float]]]  # {cell: {pattern: {volume: value}}}

INTERVAL_COLUMNS = (
    "forward_model",
    "protocol",
    "acceleration",
    "pattern",
    "reference",
    "metric",
    "mean",
    "reference_mean",
    "difference",
    "ci_low",
    "ci_high",
    "wins",
    "losses",
    "n",
    "dropped",
    "resolved",
)
"""Columns of an interval row (:func:`paired_intervals`): ``wins`` / ``losses`` are the volumes where the pattern is
above / below the reference (the rest of ``n`` tie), ``dropped`` the volumes undefined (NaN) on either side,
``resolved`` whether the interval excludes 0."""

INTERVALS_TITLE = "Paired differences against the best baseline"

_LINE = re.compile(r"(?P<fm>[^/]+)/(?P<protocol>[^/]+)/(?P<pattern>[^/]+)/x(?P<acc>\d+)/(?P<seed>[^/]+)/(?P<volume>.+)")


def per_volume(lines: Mapping[str, float]) -> Values:
    """Per-volume values by cell and pattern, a seeded pattern's draws averaged per volume.

    Args:
        lines: ``{"<forward_model>/<protocol>/<pattern>/x<acc>/<seed>/<patient>/<phase>": value}``, the line names
            of the comparison's per-volume CSVs (``<seed>`` is ``seed<s>`` or ``-``).

    Returns:
        ``{(forward_model, protocol, acc): {pattern: {"<patient>/<phase>": value}}}``, patterns in first-seen order;
        a seeded pattern's value is the plain mean over its seeds (NaN if any draw is NaN on that volume).
    """
    draws: dict[Cell, dict[str, dict[str, list[float]]]] = {}
    for line, value in lines.items():
        match = _LINE.fullmatch(line)
        if match is None:
            raise ValueError(
                f"'{line}': expected a per-volume line <forward_model>/<protocol>/<pattern>/x<acc>/<seed>/<patient>/"
                "<phase>"
            )
        cell = (match["fm"], match["protocol"], int(match["acc"]))
        by_volume = draws.setdefault(cell, {}).setdefault(match["pattern"], {})
        by_volume.setdefault(match["volume"], []).append(float(value))
    out: Values = {}
    for cell, patterns in draws.items():
        volume_sets = {p: sorted(v) for p, v in patterns.items()}
        first = next(iter(volume_sets.values()))
        odd = {p: v for p, v in volume_sets.items() if v != first}
        if odd:
            raise ValueError(
                f"x{cell[2]} {cell[0]} {cell[1]}: expected the same volumes for every pattern ({first}), found {odd}"
            )
        out[cell] = {p: {v: float(np.mean(x)) for v, x in volumes.items()} for p, volumes in patterns.items()}
    return out


def rank_baselines(values: Mapping[str, Mapping[str, float]], baselines: Sequence[str]) -> list[str]:
    """The ``baselines`` present in one cell's ``{pattern: {volume: value}}``, best first: by mean over the volumes
    where defined, higher better (Dice); equal means keep the order of ``baselines``, a baseline NaN everywhere is
    last."""
    means = {b: float(nanmean(np.asarray(list(values[b].values())))) for b in baselines if b in values}
    return sorted(means, key=lambda b: (math.isnan(means[b]), -means[b] if not math.isnan(means[b]) else 0.0))


def paired_intervals(
    values: Values, baselines: Sequence[str], metric: str, n_resamples: int = N_RESAMPLES, seed: int = 0
) -> list[dict]:
    """The paired per-volume comparison of each cell's patterns against its best baseline.

    In each (forward model, protocol, acceleration) cell of ``values`` (:func:`per_volume`), the baselines present
    are ranked (:func:`rank_baselines`); every other pattern (full sampling left out) is compared with the best,
    the best with the next best, and each learned pattern (not a baseline) with each learned pattern after it (IGS
    against LOUPE), by :func:`~common.utils.stats.paired_bootstrap` over the volumes (pattern minus reference,
    ``n_resamples`` resamples from ``seed``). A cell with one pattern (full sampling aside) gives no row.

    Returns:
        one dict per comparison with the keys :data:`INTERVAL_COLUMNS` (``metric`` names the per-volume value;
        ``mean`` and ``reference_mean`` are over the ``n`` volumes compared), in cell and pattern order.
    """
    rows = []
    for (fm, protocol, acc), patterns in values.items():
        ranked = rank_baselines(patterns, baselines)
        pairs = []
        for pattern in patterns:
            if not ranked or pattern == "full" or (pattern == ranked[0] and len(ranked) < 2):
                continue
            pairs.append((pattern, ranked[1] if pattern == ranked[0] else ranked[0]))
        learned = [p for p in patterns if p not in baselines and p != "full"]
        pairs += [(a, b) for i, a in enumerate(learned) for b in learned[i + 1 :]]
        for pattern, reference in pairs:
            volumes = sorted(patterns[pattern])
            result = paired_bootstrap(
                np.array([patterns[pattern][v] for v in volumes]),
                np.array([patterns[reference][v] for v in volumes]),
                n_resamples=n_resamples,
                seed=seed,
            )
            rows.append(
                {
                    "forward_model": fm,
                    "protocol": protocol,
                    "acceleration": acc,
                    "pattern": pattern,
                    "reference": reference,
                    "metric": metric,
                    "mean": result.mean_a,
                    "reference_mean": result.mean_b,
                    "difference": result.difference,
                    "ci_low": result.low,
                    "ci_high": result.high,
                    "wins": result.wins_a,
                    "losses": result.wins_b,
                    "n": result.n,
                    "dropped": result.dropped,
                    "resolved": result.resolved,
                }
            )
    return rows


def _difference(row: Mapping) -> PairedDifference:
    """An interval row back as the :class:`~common.utils.stats.PairedDifference` it was made from."""
    n, wins, losses = int(row["n"]), int(row["wins"]), int(row["losses"])
    return PairedDifference(
        mean_a=float(row["mean"]),
        mean_b=float(row["reference_mean"]),
        difference=float(row["difference"]),
        low=float(row["ci_low"]),
        high=float(row["ci_high"]),
        n=n,
        dropped=int(row["dropped"]),
        wins_a=wins,
        wins_b=losses,
        ties=n - wins - losses,
        confidence=0.95,
    )


def finding(row: Mapping, digits: int = 3) -> str:
    """One interval row as a sentence: ``"x16 phase frozen: igs - one_sided = -0.064 [-0.095, -0.032], 6/20
    volumes: one_sided better"``; ``"...: not resolved on these data"`` where the interval includes 0."""
    result = _difference(row)
    pattern, reference = row["pattern"], row["reference"]
    text = (
        f"x{row['acceleration']} {row['forward_model']} {row['protocol']}: {pattern} - {reference} = "
        f"{format_difference(result, digits, unit='volumes')}"
    )
    return f"{text}: {ordering(result, pattern, reference)}"


def intervals_markdown(
    rows: Sequence[Mapping],
    label: str,
    baselines: Sequence[str],
    networks: int = 1,
    n_resamples: int = N_RESAMPLES,
    digits: int = 3,
) -> str:
    """The markdown section of :func:`paired_intervals` rows: what was compared and how, what the intervals can
    resolve with this many volumes, a table, and one :func:`finding` per row.

    Args:
        rows: interval rows (:data:`INTERVAL_COLUMNS`).
        label: what the per-volume value is (e.g. ``"Dice (mean over rv, myocardium, lv)"``).
        baselines: the baseline names the reference was chosen among.
        networks: over how many networks each volume's value was averaged before pairing.
        n_resamples: the bootstrap resamples the rows were made with.
        digits: decimals of the values.
    """
    averaged = (
        f" (each volume's value first averaged over the {networks} networks, so the pairs are the volumes)"
        if networks > 1
        else ""
    )
    out = [
        f"## {INTERVALS_TITLE}",
        "",
        f"In each forward model, protocol and acceleration, every pattern against the best baseline there (the one "
        f"of {', '.join(baselines)} with the highest mean over the volumes; a seeded baseline as each volume's mean "
        f"over its seeds), the best baseline against the next best, and the learned patterns against each other. "
        f"Per-volume {label}, paired by "
        f"volume{averaged}: the mean difference (pattern - reference) with the percentile 95 % interval of "
        f"{n_resamples:,} seeded bootstrap "
        "resamples of the volumes, and the volumes the pattern wins out of those compared. An ordering is stated "
        f"only where the interval excludes 0 over at least {MIN_CASES} volumes. Means here are over volumes of each volume's value; a table above "
        "averages each structure over volumes first, so the two differ only where a structure is absent from a "
        "volume.",
    ]
    if not rows:
        return "\n".join(out + ["", "No cell holds a baseline and another pattern to compare with it.", ""])
    counts = sorted({int(r["n"]) for r in rows})
    half = [(float(r["ci_high"]) - float(r["ci_low"])) / 2 for r in rows]
    half = [h for h in half if not math.isnan(h)]
    volumes = "/".join(map(str, counts))
    if half:
        out[-1] += (
            f" With {volumes} volumes the intervals' half-widths run from {min(half):.{digits}f} to "
            f"{max(half):.{digits}f}: smaller differences are not resolved."
        )
    dropped = sum(int(r["dropped"]) for r in rows)
    if dropped:
        out[-1] += f" {dropped} volume(s) undefined on either side left out over all comparisons (column dropped)."
    out += [
        "",
        "| acceleration | forward model | protocol | pattern | reference | mean | reference mean | difference "
        "[95 % CI], wins/n |",
        "|" + "---|" * 8,
    ]
    for r in rows:
        out.append(
            f"| x{r['acceleration']} | {r['forward_model']} | {r['protocol']} | {r['pattern']} | {r['reference']} | "
            f"{float(r['mean']):.{digits}f} | {float(r['reference_mean']):.{digits}f} | "
            f"{format_difference(_difference(r), digits)} |"
        )
    out += ["", "**Findings**", ""] + [f"- {finding(r, digits)}" for r in rows]
    return "\n".join(out) + "\n"


def intervals_unavailable(task: str) -> str:
    """The markdown section that says why a task has no paired intervals: its scores are over slices, and the unit
    of evidence is the volume."""
    return (
        f"## {INTERVALS_TITLE}\n\nNot computed for the {task} task: its scores are computed over the test slices, "
        "with no value per volume to pair, and a slice is not the unit of evidence (the volume is).\n"
    )
