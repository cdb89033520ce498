"""Tables and figure of the lesion evaluation: per-subject rows, a summary per (model, inference) setting with the
micro-DSC, markdown with every definition, and per-subject Dice as a figure."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from common.metrics.lesion import LESION_SCORES, micro_dice
from common.metrics.surface import EMPTY_MASK_CONVENTION
from common.utils.atomic_io import atomic_path, save_figure, write_csv_rows

__all__ = ["SUMMARY_SCORES", "summarise_settings", "markdown_report", "write_reports", "plot_dice"]

SUMMARY_SCORES = (
    "dice",
    "hd_mm",
    "assd_mm",
    "tpr",
    "precision",
    "lesion_f1",
    "lesion_count_difference",
    "volume_difference",
    "volume_difference_ml",
    "seconds",
)
"""Per-subject keys summarised as mean and population sd (NaN left out, their count given for HD and ASSD)."""


def summarise_settings(rows: Sequence[Mapping[str, object]]) -> list[dict]:
    """One row per (``model``, ``inference``) of the per-subject ``rows``, in order of first appearance:
    ``subjects``, ``micro_dice`` (voxels pooled), ``<score>_mean`` / ``<score>_sd`` of :data:`SUMMARY_SCORES`,
    ``surface_measured`` (subjects with HD / ASSD) and ``surface_missed`` (empty prediction)."""
    groups: dict[tuple[str, str], list[Mapping[str, object]]] = {}
    for r in rows:
        groups.setdefault((str(r["model"]), str(r["inference"])), []).append(r)
    out = []
    for (model, inference), group in groups.items():
        row: dict[str, object] = {"model": model, "inference": inference, "subjects": len(group)}
        row["micro_dice"] = micro_dice(group)
        for key in SUMMARY_SCORES:
            v = np.array([float(g[key]) for g in group], dtype=np.float64)
            v = v[~np.isnan(v)]
            row[f"{key}_mean"] = float(v.mean()) if v.size else math.nan
            row[f"{key}_sd"] = float(v.std()) if v.size else math.nan
        row["surface_measured"] = sum(g["surface"] == "measured" for g in group)
        row["surface_missed"] = sum(g["surface"] == "missed" for g in group)
        out.append(row)
    return out


def _cell(mean: float, sd: float, digits: int) -> str:
    return "n/a" if math.isnan(mean) else f"{mean:.{digits}f} ± {sd:.{digits}f}"


def _cells(row: Mapping[str, object], metrics: Sequence[tuple[str, int]]) -> str:
    """``mean ± sd`` of each ``(metric, digits)`` of a summary row, as markdown table cells."""
    return " | ".join(_cell(float(row[f"{k}_mean"]), float(row[f"{k}_sd"]), d) for k, d in metrics)


def markdown_report(summary: Sequence[Mapping[str, object]], title: str = "Lesion segmentation") -> str:
    """The summary as markdown: the paper's six metrics, then the ATLAS v2.0 challenge metrics, then definitions."""
    lines = [f"# {title}", "", "## The paper's metrics (mean ± sd over subjects; micro-DSC pools all voxels)", ""]
    lines += [
        "| model | inference | subjects | micro-DSC | DSC | HD (mm) | ASSD (mm) | TPR | precision | s / subject |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in summary:
        lines.append(
            f"| {r['model']} | {r['inference']} | {r['subjects']} | {float(r['micro_dice']):.3f} | "
            + _cells(r, (("dice", 3), ("hd_mm", 1), ("assd_mm", 2), ("tpr", 3), ("precision", 3), ("seconds", 2)))
            + " |"
        )
    lines += ["", "## ATLAS v2.0 challenge metrics (mean ± sd over subjects)", ""]
    lines += [
        "| model | inference | lesion-wise F1 | lesion count difference | volume difference (voxels) | "
        "volume difference (ml) | HD / ASSD measured | empty predictions |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in summary:
        lines.append(
            f"| {r['model']} | {r['inference']} | "
            + _cells(
                r,
                (
                    ("lesion_f1", 3),
                    ("lesion_count_difference", 2),
                    ("volume_difference", 1),
                    ("volume_difference_ml", 2),
                ),
            )
            + f" | {r['surface_measured']} / {r['subjects']} | {r['surface_missed']} |"
        )
    lines += ["", "## Definitions", ""]
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


def write_reports(rows: Sequence[Mapping[str, object]], output_dir: str | Path) -> dict[str, Path]:
    """``lesion_scores.csv`` (per subject), ``lesion_summary.csv``, ``lesion_report.md`` and ``lesion_dice.png``
    under ``output_dir`` (written atomically); returns their paths by name."""
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    summary = summarise_settings(rows)
    paths = {
        "scores": write_csv_rows(out / "lesion_scores.csv", rows),
        "summary": write_csv_rows(out / "lesion_summary.csv", summary),
    }
    with atomic_path(out / "lesion_report.md") as tmp:
        tmp.write_text(markdown_report(summary))
    paths["report"] = out / "lesion_report.md"
    paths["figure"] = plot_dice(rows, out / "lesion_dice.png")
    return paths
