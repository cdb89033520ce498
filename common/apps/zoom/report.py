"""Tables and figure of the lesion evaluation: per-subject rows; a summary per (model, inference) setting, each score
as mean +- sample sd with the bootstrap interval of its mean over subjects, and the micro-DSC; the paired per-subject
differences between the stages and between the inference modes, with their intervals and the orderings they
support; markdown with every definition, and per-subject Dice as a figure."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np

from common.metrics.lesion import LESION_SCORES, micro_dice
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
    "SummaryScore",
    "SUMMARY_SCORES",
    "Comparison",
    "summarise_settings",
    "paired_differences",
    "difference_rows",
    "finding",
    "markdown_report",
    "write_reports",
    "plot_dice",
]


class SummaryScore(NamedTuple):
    """How a per-subject score is shown: its label, decimals, and whether lower values are better."""

    label: str
    digits: int
    lower_is_better: bool


SUMMARY_SCORES = {
    "dice": SummaryScore("DSC", 3, False),
    "hd_mm": SummaryScore("HD (mm)", 1, True),
    "assd_mm": SummaryScore("ASSD (mm)", 2, True),
    "tpr": SummaryScore("TPR", 3, False),
    "precision": SummaryScore("precision", 3, False),
    "lesion_f1": SummaryScore("lesion-wise F1", 3, False),
    "lesion_count_difference": SummaryScore("lesion count difference", 2, True),
    "volume_difference": SummaryScore("volume difference (voxels)", 1, True),
    "volume_difference_ml": SummaryScore("volume difference (ml)", 2, True),
    "seconds": SummaryScore("s / subject", 2, True),
}
"""Per-subject keys summarised over subjects (NaN left out and counted: HD and ASSD of an empty mask) and compared
between settings, in table order."""

_PAPER = ("dice", "hd_mm", "assd_mm", "tpr", "precision", "seconds")
_CHALLENGE = ("lesion_f1", "lesion_count_difference", "volume_difference", "volume_difference_ml")


class Comparison(NamedTuple):
    """Setting ``a`` against setting ``b`` on one score, paired by subject: ``factor`` (``"model"`` or
    ``"inference"``) is what differs, ``fixed`` the value of the other factor both share."""

    factor: str
    fixed: str
    a: str
    b: str
    metric: str
    result: PairedDifference

    @property
    def title(self) -> str:
        """``"zoom-in & zoom-out vs zoom-in only (sliding window)"``."""
        return f"{self.a} vs {self.b} ({self.fixed})"


def _settings(rows: Sequence[Mapping[str, object]]) -> dict[tuple[str, str], dict[str, Mapping[str, object]]]:
    """Per-subject ``rows`` by (``model``, ``inference``) in order of first appearance, each ``{case: row}`` sorted
    by case (so that an interval does not depend on the order of the rows)."""
    return group_by_case(
        rows, lambda r: (str(r["model"]), str(r["inference"])), lambda r: f"{r['model']}, {r['inference']}", "subject"
    )


def summarise_settings(
    rows: Sequence[Mapping[str, object]], n_resamples: int = N_RESAMPLES, seed: int = 0
) -> list[dict]:
    """One row per (``model``, ``inference``) of the per-subject ``rows``, in order of first appearance:
    ``subjects``, ``micro_dice`` (voxels pooled: one value, no interval), for each of :data:`SUMMARY_SCORES`
    ``<score>_mean``, ``<score>_sd`` (sample sd), ``<score>_ci_low`` / ``<score>_ci_high`` (the percentile 95 %
    interval of the mean over ``n_resamples`` bootstrap resamples of the subjects sorted by case, seeded by ``seed``:
    :func:`~common.utils.stats.bootstrap_mean`) and ``<score>_n`` (subjects where it is defined), and
    ``surface_missed`` (subjects with an empty prediction)."""
    out = []
    for (model, inference), group in _settings(rows).items():
        row: dict[str, object] = {"model": model, "inference": inference, "subjects": len(group)}
        row["micro_dice"] = micro_dice(list(group.values()))
        for key in SUMMARY_SCORES:
            result = bootstrap_mean(np.array([float(g[key]) for g in group.values()]), n_resamples, seed)
            row.update(mean_interval_columns(key, result))
        row["surface_missed"] = sum(g["surface"] == "missed" for g in group.values())
        out.append(row)
    return out


def paired_differences(
    rows: Sequence[Mapping[str, object]], n_resamples: int = N_RESAMPLES, seed: int = 0
) -> list[Comparison]:
    """The comparisons of the per-subject ``rows``, each score of :data:`SUMMARY_SCORES` paired by subject
    (:func:`~common.utils.stats.paired_bootstrap`, ``n_resamples`` resamples seeded by ``seed``): at each inference
    mode, every model against the first model (zoom-in & zoom-out against zoom-in only); with each model, every
    inference mode against the first (centre crop against sliding window). Settings in order of first appearance,
    subjects sorted by ``case``; two settings compared must hold the same subjects."""
    groups = _settings(rows)
    models = list(dict.fromkeys(m for m, _ in groups))
    inferences = list(dict.fromkeys(i for _, i in groups))
    pairs = [("model", i, (m, i), (models[0], i)) for i in inferences for m in models[1:]]
    pairs += [("inference", m, (m, i), (m, inferences[0])) for m in models for i in inferences[1:]]
    out = []
    for factor, fixed, a, b in pairs:
        if a not in groups or b not in groups:
            continue
        results = paired_by_case(groups[a], groups[b], SUMMARY_SCORES, (str(a), str(b)), "subjects", n_resamples, seed)
        name_a, name_b = (a[0], b[0]) if factor == "model" else (a[1], b[1])
        out += [Comparison(factor, fixed, name_a, name_b, key, result) for key, result in results.items()]
    return out


def difference_rows(comparisons: Sequence[Comparison]) -> list[dict]:
    """The :class:`Comparison` s as CSV rows: ``a_higher`` / ``b_higher`` / ``ties`` count the subjects by the sign
    of ``a - b`` (for a ``lower_is_better`` score ``b_higher`` are ``a``'s wins), ``dropped`` the subjects undefined
    on either side, ``ordering`` what the interval supports (:func:`~common.utils.stats.ordering`)."""
    return [
        {
            "factor": c.factor,
            "fixed": c.fixed,
            "a": c.a,
            "b": c.b,
            "metric": c.metric,
            "lower_is_better": SUMMARY_SCORES[c.metric].lower_is_better,
            **difference_columns(c.result),
            "ordering": ordering(c.result, c.a, c.b, SUMMARY_SCORES[c.metric].lower_is_better),
        }
        for c in comparisons
    ]


def finding(comparisons: Sequence[Comparison]) -> str:
    """One sentence for the scores of one comparison (one ``title``), generated by
    :func:`~common.utils.stats.ordering`: ``"zoom-in & zoom-out vs zoom-in only (sliding window), 4 subjects:
    zoom-in & zoom-out better on DSC (0.050 [0.020, 0.080], 4/4 higher); not resolved on these data: HD (mm),
    ..."``. An ordering is stated only for a score whose interval excludes 0 (with the difference, its interval and
    the subjects where ``a`` is higher: for a lower-is-better score ``a``'s losses)."""
    groups: dict[tuple[bool, str], list[str]] = {}
    for c in comparisons:
        score = SUMMARY_SCORES[c.metric]
        text = ordering(c.result, c.a, c.b, score.lower_is_better)
        difference = format_difference(c.result, score.digits, unit="higher")
        entry = f"{score.label} ({difference})" if c.result.resolved else score.label
        groups.setdefault((not c.result.resolved, text), []).append(entry)
    parts = [
        f"{text}: {', '.join(entries)}" if unresolved else f"{text} on {', '.join(entries)}"
        for (unresolved, text), entries in sorted(groups.items(), key=lambda item: item[0][0])
    ]
    subjects = comparisons[0].result.n + comparisons[0].result.dropped
    return f"{comparisons[0].title}, {subjects} subjects: " + "; ".join(parts)


def _cells(row: Mapping[str, object], keys: Sequence[str]) -> str:
    """``mean +- sd [low, high]`` of each of ``keys`` of a summary row, as markdown table cells."""
    return " | ".join(
        format_mean_interval(mean_interval_from_columns(row, k, int(row["subjects"])), SUMMARY_SCORES[k].digits)
        for k in keys
    )


def _differences_section(comparisons: Sequence[Comparison], n_resamples: int, seed: int) -> list[str]:
    """The markdown of the paired differences: how they are made, what they can resolve, the table, the findings."""
    out = [
        "## Paired differences (per subject)",
        "",
        "Each stage against the first at the same inference mode, and each inference mode against the first with the "
        "same stage, on the same subjects: A - B is the mean of the per-subject differences, with the percentile 95 % "
        f"interval of {n_resamples:,} bootstrap resamples of the subjects (seed {seed}) and the subjects where A is "
        "higher out of those compared (lower is better for HD, ASSD, the count and volume differences and the time). "
        f'An ordering is stated only where the interval excludes 0 over at least {MIN_CASES} subjects, else "not resolved '
        'on these data".',
    ]
    if not comparisons:
        return out + ["", "Only one model and one inference mode were evaluated: nothing to compare.", ""]
    resolution = format_resolution([c.result for c in comparisons if c.metric == "dice"], "subjects", "DSC", 3)
    out[-1] += f" {resolution}" if resolution else ""
    out += [
        "",
        "| A | B | with | score | A | B | A - B [95 % CI], A higher / n | reading |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for c in comparisons:
        score = SUMMARY_SCORES[c.metric]
        out.append(
            f"| {c.a} | {c.b} | {c.fixed} | {score.label} | {c.result.mean_a:.{score.digits}f} | "
            f"{c.result.mean_b:.{score.digits}f} | {format_difference(c.result, score.digits)} | "
            f"{ordering(c.result, c.a, c.b, score.lower_is_better)} |"
        )
    titles = list(dict.fromkeys(c.title for c in comparisons))
    out += ["", "**Findings**", ""]
    out += [f"- {finding([c for c in comparisons if c.title == t])}" for t in titles]
    return out + [""]


def markdown_report(
    summary: Sequence[Mapping[str, object]],
    comparisons: Sequence[Comparison] = (),
    title: str = "Lesion segmentation",
    n_resamples: int = N_RESAMPLES,
    seed: int = 0,
) -> str:
    """The summary (:func:`summarise_settings`) and the paired ``comparisons`` (:func:`paired_differences`, made
    with ``n_resamples`` and ``seed``) as markdown: the paper's six metrics, the ATLAS v2.0 challenge metrics, the
    paired differences with their findings, then definitions."""
    lines = [
        f"# {title}",
        "",
        "The unit is the test subject (scan). Each cell: mean +- sample sd over subjects [percentile 95 % interval of "
        f"the mean, {n_resamples:,} bootstrap resamples of the subjects, seed {seed}]; HD and ASSD over the subjects "
        "where both masks are non-empty (HD / ASSD measured). The micro-DSC pools the voxels of all subjects: one "
        "value per setting, no interval.",
        "",
        "## The paper's metrics",
        "",
        "| model | inference | subjects | micro-DSC | DSC | HD (mm) | ASSD (mm) | TPR | precision | s / subject |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in summary:
        lines.append(
            f"| {r['model']} | {r['inference']} | {r['subjects']} | {float(r['micro_dice']):.3f} | "
            f"{_cells(r, _PAPER)} |"
        )
    lines += ["", "## ATLAS v2.0 challenge metrics", ""]
    lines += [
        "| model | inference | lesion-wise F1 | lesion count difference | volume difference (voxels) | "
        "volume difference (ml) | HD / ASSD measured | empty predictions |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in summary:
        lines.append(
            f"| {r['model']} | {r['inference']} | {_cells(r, _CHALLENGE)} | {r['hd_mm_n']} / {r['subjects']} | "
            f"{r['surface_missed']} |"
        )
    lines += [""] + _differences_section(comparisons, n_resamples, seed)
    lines += ["## Definitions", ""]
    lines += [f"- `{k}`: {v}" for k, v in LESION_SCORES.items()]
    lines += ["- micro-DSC: 2 Σ|P∩G| / (Σ|P| + Σ|G|) over all subjects' voxels", f"- {EMPTY_MASK_CONVENTION}", ""]
    return "\n".join(lines)


def plot_dice(rows: Sequence[Mapping[str, object]], path: str | Path) -> Path:
    """Per-subject Dice of each (model, inference) setting: one column of points per setting, the mean as a bar."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    settings = list(dict.fromkeys((str(r["model"]), str(r["inference"])) for r in rows))
    fig, ax = plt.subplots(figsize=(1.6 * len(settings) + 2, 3.5))
    for k, (model, inference) in enumerate(settings):
        dice = [float(r["dice"]) for r in rows if (r["model"], r["inference"]) == (model, inference)]
        ax.bar(k, np.mean(dice), color="0.85", width=0.6)
        ax.plot(k + np.linspace(-0.15, 0.15, len(dice)), dice, "o", color="C0", ms=4)
    ax.set_xticks(range(len(settings)), [f"{m}\n{i}" for m, i in settings], fontsize=8)
    ax.set_ylabel("Dice per subject")
    ax.set_ylim(0, 1)
    fig.tight_layout()
    try:
        return save_figure(fig, path)
    finally:
        plt.close(fig)


def write_reports(
    rows: Sequence[Mapping[str, object]], output_dir: str | Path, n_resamples: int = N_RESAMPLES, seed: int = 0
) -> dict[str, Path]:
    """``lesion_scores.csv`` (per subject), ``lesion_summary.csv`` (:func:`summarise_settings`),
    ``lesion_differences.csv`` (:func:`difference_rows`; only when two settings are compared), ``lesion_report.md``
    and ``lesion_dice.png`` under ``output_dir`` (written atomically), the intervals from ``n_resamples`` bootstrap
    resamples seeded by ``seed``; returns their paths by name."""
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    summary = summarise_settings(rows, n_resamples, seed)
    comparisons = paired_differences(rows, n_resamples, seed)
    paths = {
        "scores": write_csv_rows(out / "lesion_scores.csv", rows),
        "summary": write_csv_rows(out / "lesion_summary.csv", summary),
    }
    if comparisons:
        paths["differences"] = write_csv_rows(out / "lesion_differences.csv", difference_rows(comparisons))
    with atomic_path(out / "lesion_report.md") as tmp:
        tmp.write_text(markdown_report(summary, comparisons, n_resamples=n_resamples, seed=seed))
    paths["report"] = out / "lesion_report.md"
    paths["figure"] = plot_dice(rows, out / "lesion_dice.png")
    return paths
