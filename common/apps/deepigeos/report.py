"""Tables and figure of the interactive evaluation: Dice and ASSD per method and round as mean +- sample sd with the
bootstrap interval of the mean over test cases, clicks per round, and the paired per-case differences the method's
claims rest on (each with its interval, the cases each side wins and the ordering the interval supports)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np

from common.metrics.surface import EMPTY_MASK_CONVENTION
from common.utils.atomic_io import atomic_path, save_figure, write_csv_rows
from common.utils.stats import (
    MIN_CASES,
    N_RESAMPLES,
    PairedDifference,
    bootstrap_mean,
    difference_columns,
    format_difference,
    format_mean_interval,
    format_resolution,
    group_by_case,
    mean_interval_columns,
    mean_interval_from_columns,
    ordering,
    paired_by_case,
)

__all__ = [
    "Score",
    "SCORES",
    "Pair",
    "Comparison",
    "summarise_rounds",
    "paired_comparisons",
    "difference_rows",
    "finding",
    "markdown_report",
    "write_reports",
    "plot_dice_vs_clicks",
]


class Score(NamedTuple):
    """How a per-case value is shown: its label, decimals, and whether lower values are better."""

    label: str
    digits: int
    lower_is_better: bool


SCORES = {"dice": Score("Dice", 4, False), "assd_mm": Score("ASSD (mm)", 2, True)}
"""The per-case scores compared between methods (ASSD NaN where a mask is empty: left out and counted)."""

_MEASURES = ("clicks", "clicks_total", *SCORES, "seconds")


class Pair(NamedTuple):
    """One paired comparison: method ``a`` after round ``round_a`` against ``b`` after ``round_b`` (round 0: the
    automatic segmentation), listed under ``heading``."""

    heading: str
    a: str
    round_a: int
    b: str
    round_b: int

    def side(self, which: str) -> str:
        """``"R-Net, round 2"`` for ``which = "a"`` or ``"b"`` (the bare name at round 0)."""
        name, rnd = (self.a, self.round_a) if which == "a" else (self.b, self.round_b)
        return name if rnd == 0 else f"{name}, round {rnd}"


class Comparison(NamedTuple):
    """The :class:`Pair` on one of :data:`SCORES`, paired by case (:func:`~common.utils.stats.paired_bootstrap` of
    ``a - b``)."""

    pair: Pair
    metric: str
    result: PairedDifference

    @property
    def ordering(self) -> str:
        """What the interval supports (:func:`~common.utils.stats.ordering`)."""
        p = self.pair
        return ordering(self.result, p.side("a"), p.side("b"), SCORES[self.metric].lower_is_better)


def _groups(rows: Sequence[Mapping[str, object]]) -> dict[tuple[str, int], dict[str, Mapping[str, object]]]:
    """Per-case ``rows`` by (``method``, ``round``) in order of first appearance (rounds ascending within a method),
    each ``{case: row}`` sorted by case (so that an interval does not depend on the order of the rows)."""
    groups = group_by_case(
        rows, lambda r: (str(r["method"]), int(r["round"])), lambda r: f"{r['method']}, round {r['round']}"
    )
    order = list(dict.fromkeys(method for method, _ in groups))
    return {k: groups[k] for k in sorted(groups, key=lambda k: (order.index(k[0]), k[1]))}


def summarise_rounds(rows: Sequence[Mapping[str, object]], n_resamples: int = N_RESAMPLES, seed: int = 0) -> list[dict]:
    """One row per (method, round) of the per-case ``rows`` (keys ``case``, ``method``, ``round`` and ``clicks``,
    ``clicks_total``, ``dice``, ``assd_mm``, ``seconds``), methods in order of first appearance, rounds ascending:
    ``cases``, then for each measure ``<measure>_mean``, ``<measure>_sd`` (sample sd, ``ddof=1``),
    ``<measure>_ci_low`` / ``<measure>_ci_high`` (the percentile 95 % interval of the mean over ``n_resamples``
    bootstrap resamples of the cases sorted by case, seeded by ``seed``:
    :func:`~common.utils.stats.bootstrap_mean`) and ``<measure>_n`` (cases where it is defined: ASSD needs both masks
    non-empty)."""
    out = []
    for (method, rnd), group in _groups(rows).items():
        row: dict[str, object] = {"method": method, "round": rnd, "cases": len(group)}
        for m in _MEASURES:
            result = bootstrap_mean(np.array([float(g[m]) for g in group.values()]), n_resamples, seed)
            row.update(mean_interval_columns(m, result))
        out.append(row)
    return out


def paired_comparisons(
    rows: Sequence[Mapping[str, object]], pairs: Sequence[Pair], n_resamples: int = N_RESAMPLES, seed: int = 0
) -> list[Comparison]:
    """Each of ``pairs`` on each of :data:`SCORES`, paired by case: the mean of the per-case differences ``a - b``,
    its percentile 95 % interval over ``n_resamples`` bootstrap resamples of the cases (sorted by case, seeded by
    ``seed``), and the cases where each side is higher (:func:`~common.utils.stats.paired_bootstrap`; a case with
    ASSD undefined on either side is dropped and counted). A pair whose method or round was not evaluated is left
    out; the two sides of a pair must hold the same cases."""
    groups = _groups(rows)
    out = []
    for pair in pairs:
        a, b = (pair.a, pair.round_a), (pair.b, pair.round_b)
        if a not in groups or b not in groups:
            continue
        names = (pair.side("a"), pair.side("b"))
        results = paired_by_case(groups[a], groups[b], SCORES, names, "cases", n_resamples, seed)
        out += [Comparison(pair, metric, result) for metric, result in results.items()]
    return out


def difference_rows(comparisons: Sequence[Comparison]) -> list[dict]:
    """The comparisons as CSV rows: ``a_higher`` / ``b_higher`` / ``ties`` count the cases by the sign of ``a - b``
    (for a ``lower_is_better`` score ``b_higher`` are ``a``'s wins), ``dropped`` the cases undefined on either side,
    ``ordering`` what the interval supports."""
    return [
        {
            "comparison": c.pair.heading,
            "a": c.pair.a,
            "round_a": c.pair.round_a,
            "b": c.pair.b,
            "round_b": c.pair.round_b,
            "metric": c.metric,
            "lower_is_better": SCORES[c.metric].lower_is_better,
            **difference_columns(c.result),
            "ordering": c.ordering,
        }
        for c in comparisons
    ]


def finding(comparisons: Sequence[Comparison]) -> str:
    """One sentence for the scores of one pair, each with what its interval supports: ``"R-Net + CRF-Net(fu), round
    1 vs Balls at the clicks, no network, round 1, 4 cases: Dice: R-Net + CRF-Net(fu), round 1 better (0.0210
    [0.0105, 0.0330], 4/4); ASSD (mm): not resolved on these data"``. The difference, its interval and the cases
    where ``a`` is higher follow an ordering only."""
    pair = comparisons[0].pair
    parts = []
    for c in comparisons:
        score = SCORES[c.metric]
        text = f"{score.label}: {c.ordering}"
        parts.append(text + (f" ({format_difference(c.result, score.digits)})" if c.result.resolved else ""))
    cases = comparisons[0].result.n + comparisons[0].result.dropped
    return f"{pair.side('a')} vs {pair.side('b')}, {cases} cases: " + "; ".join(parts)


def _differences_section(comparisons: Sequence[Comparison], n_resamples: int, seed: int) -> list[str]:
    """The markdown of the paired differences: how they are made, what they can resolve, a table per heading, the
    findings."""
    out = [
        "## Paired differences (per test case)",
        "",
        (
            "A - B is the mean of the per-case differences on the same test cases, with the percentile 95 % interval "
            f"of {n_resamples:,} bootstrap resamples of the cases (seed {seed}) and the cases where A is higher out of "
            "those compared (higher is better for Dice, lower for ASSD). An ordering is stated only where the interval "
            f'excludes 0 over at least {MIN_CASES} cases, else "not resolved on these data".'
        ),
    ]
    if not comparisons:
        return out + ["", "No two methods were evaluated on the same cases: nothing to compare.", ""]
    resolution = format_resolution([c.result for c in comparisons if c.metric == "dice"], "test cases", "Dice", 4)
    out[-1] += f" {resolution}" if resolution else ""
    for heading in dict.fromkeys(c.pair.heading for c in comparisons):
        out += [
            "",
            f"### {heading}",
            "",
            "| A | B | score | mean A | mean B | A - B [95 % CI], A higher / n | reading |",
            "|---|---|---|---|---|---|---|",
        ]
        for c in (c for c in comparisons if c.pair.heading == heading):
            score = SCORES[c.metric]
            out.append(
                f"| {c.pair.side('a')} | {c.pair.side('b')} | {score.label} | {c.result.mean_a:.{score.digits}f} | "
                f"{c.result.mean_b:.{score.digits}f} | {format_difference(c.result, score.digits)} | {c.ordering} |"
            )
    out += ["", "**Findings**", ""]
    for pair in dict.fromkeys(c.pair for c in comparisons):
        out.append(f"- {finding([c for c in comparisons if c.pair == pair])}")
    return out + [""]


def markdown_report(
    summary: Sequence[Mapping[str, object]],
    comparisons: Sequence[Comparison],
    methods: Sequence[str],
    settings: Mapping[str, object],
    n_resamples: int = N_RESAMPLES,
    seed: int = 0,
) -> str:
    """The markdown of :func:`write_reports`: settings, the table per method and round (:func:`summarise_rounds`),
    and the paired ``comparisons`` (:func:`paired_comparisons`, made with ``n_resamples`` and ``seed``) with their
    findings."""
    cases = max(int(r["cases"]) for r in summary)
    refined = "initial" if settings.get("refine_from", "initial") == "initial" else "previous"
    lines = [
        "# DeepIGeoS interactive evaluation",
        "",
        (
            f"{cases} test cases, the unit of every statistic. Round 0 is the automatic segmentation; in round r the "
            "simulated user adds clicks on the errors of the label of round r - 1 (the slices with the most errors, "
            f"the DeepIGeoS rule per error region, at most {settings.get('max_clicks')} per round) and the method "
            f"refines the {refined} label with all clicks so far. The initial label is {settings.get('start')}. Dice "
            "and ASSD cells: mean +- sample sd over cases [percentile 95 % interval of the mean, "
            f"{n_resamples:,} bootstrap resamples of the cases, seed {seed}]."
        ),
        "",
        "Settings: " + ", ".join(f"{k} {v}" for k, v in settings.items()),
        "",
        "| method | round | clicks in round | clicks so far | Dice | ASSD (mm) | ASSD cases | s per step |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for method in methods:
        for r in (s for s in summary if s["method"] == method):
            dice, assd = (
                format_mean_interval(mean_interval_from_columns(r, k, int(r["cases"])), SCORES[k].digits)
                for k in SCORES
            )
            lines.append(
                f"| {method} | {r['round']} | {float(r['clicks_mean']):.1f} | {float(r['clicks_total_mean']):.1f} | "
                f"{dice} | {assd} | {r['assd_mm_n']} | {float(r['seconds_mean']):.2f} |"
            )
    lines += [""] + _differences_section(comparisons, n_resamples, seed)
    lines += [f"ASSD: {EMPTY_MASK_CONVENTION}", ""]
    return "\n".join(lines)


def write_reports(
    output_dir: str | Path,
    rows: Sequence[Mapping[str, object]],
    methods: Sequence[str],
    pairs: Sequence[Pair],
    settings: Mapping[str, object],
    n_resamples: int = N_RESAMPLES,
    seed: int = 0,
) -> list[dict]:
    """Write, each atomically, into ``output_dir``: ``interactive_evaluation_cases.csv`` (``rows``, one per case,
    method and round), ``interactive_evaluation.csv`` (:func:`summarise_rounds`),
    ``interactive_evaluation_differences.csv`` (:func:`difference_rows` of :func:`paired_comparisons` of ``pairs``;
    only when a pair was evaluated) and ``interactive_evaluation.md`` (:func:`markdown_report`), the intervals from ``n_resamples`` bootstrap
    resamples seeded by ``seed``. Returns the summary rows."""
    out = Path(output_dir)
    summary = summarise_rounds(rows, n_resamples, seed)
    comparisons = paired_comparisons(rows, pairs, n_resamples, seed)
    write_csv_rows(out / "interactive_evaluation_cases.csv", rows)
    write_csv_rows(out / "interactive_evaluation.csv", summary)
    if comparisons:
        write_csv_rows(out / "interactive_evaluation_differences.csv", difference_rows(comparisons))
    with atomic_path(out / "interactive_evaluation.md") as tmp:
        tmp.write_text(markdown_report(summary, comparisons, methods, settings, n_resamples, seed))
    return summary


def plot_dice_vs_clicks(
    summary: Sequence[Mapping[str, object]], methods: Sequence[str], path: str | Path, start: str = "P-Net + CRF-Net(f)"
) -> Path:
    """Mean Dice against the mean number of clicks so far, one line per refinement method (a marker per round, from
    the ``start`` label at 0 clicks), the automatic methods as points at 0 clicks."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 5))
    ax = fig.subplots()
    begin = {str(r["method"]): float(r["dice_mean"]) for r in summary if int(r["round"]) == 0}
    for method in methods:
        rows = [r for r in summary if r["method"] == method]
        if rows and int(rows[0]["round"]) == 0 and len(rows) == 1:
            ax.scatter([0], [begin[method]], marker="s", zorder=3, label=method)
            continue
        x = [float(r["clicks_total_mean"]) for r in rows]
        y = [float(r["dice_mean"]) for r in rows]
        if start in begin:
            x, y = [0.0, *x], [begin[start], *y]
        ax.plot(x, y, marker="o", label=method)
    ax.set_xlabel("clicks so far (mean over cases)")
    ax.set_ylabel("Dice (mean over cases)")
    ax.set_title("Dice against simulated clicks")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    return save_figure(fig, path)
