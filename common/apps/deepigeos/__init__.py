"""DeepIGeoS: the click-refinement step (geodesic maps, R-Net, CRF-Net(fu)), rounds of simulated clicks shared by the
R-Net training samples and the interactive evaluation, the evaluation's reports (intervals and paired differences)
and the refinement of a label on the input grid."""

from __future__ import annotations

from .cache import RefinementCache
from .evaluation import AUTOMATIC, INTERACTIVE, InteractiveEvaluation
from .interactive import brain_box, refine_clicks, voxel_indices
from .refinement import Refinement, refine, refinement_box
from .report import (
    SCORES,
    Comparison,
    Pair,
    Score,
    difference_rows,
    finding,
    markdown_report,
    paired_comparisons,
    plot_dice_vs_clicks,
    summarise_rounds,
    write_reports,
)
from .rounds import REFINE_FROM, Round, Step, ball_step, case_seed, simulate_rounds
from .samples import (
    PredictLabeld,
    RandRefinementSampled,
    RefinementSampled,
    image_spacing,
    matched_euclidean_scale,
    segment,
)

__all__ = [
    "AUTOMATIC",
    "INTERACTIVE",
    "InteractiveEvaluation",
    "RefinementCache",
    "brain_box",
    "refine_clicks",
    "voxel_indices",
    "Refinement",
    "refine",
    "refinement_box",
    "SCORES",
    "Comparison",
    "Pair",
    "Score",
    "difference_rows",
    "finding",
    "markdown_report",
    "paired_comparisons",
    "plot_dice_vs_clicks",
    "summarise_rounds",
    "write_reports",
    "REFINE_FROM",
    "Round",
    "Step",
    "ball_step",
    "case_seed",
    "simulate_rounds",
    "PredictLabeld",
    "RandRefinementSampled",
    "RefinementSampled",
    "image_spacing",
    "matched_euclidean_scale",
    "segment",
]
