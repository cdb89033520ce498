"""Zoom-in & zoom-out lesion segmentation (Tomita et al. 2020): the original's centre-crop prediction, and the
evaluation of trained stages and inference modes on held-out subjects with the paper's and the ATLAS challenge's
metrics (per subject; summarised with intervals over subjects; the stages and inference modes compared by paired
per-subject differences; CSV / markdown / figure)."""

from __future__ import annotations

from .evaluation import LesionEvaluation
from .inferers import CentreCropInferer, centre_crop_slices
from .report import (
    SUMMARY_SCORES,
    Comparison,
    SummaryScore,
    difference_rows,
    finding,
    markdown_report,
    paired_differences,
    plot_dice,
    summarise_settings,
    write_reports,
)

__all__ = [
    "LesionEvaluation",
    "CentreCropInferer",
    "centre_crop_slices",
    "SUMMARY_SCORES",
    "SummaryScore",
    "Comparison",
    "difference_rows",
    "finding",
    "markdown_report",
    "paired_differences",
    "plot_dice",
    "summarise_settings",
    "write_reports",
]
