"""DeepIGeoS: the click-refinement step (geodesic maps, R-Net, CRF-Net(fu)), R-Net training samples made the same
way, the interactive evaluation (rounds of simulated clicks) and the refinement of a label on the input grid."""

from __future__ import annotations

from .evaluation import AUTOMATIC, INTERACTIVE, InteractiveEvaluation, Round
from .interactive import brain_box, refine_clicks, voxel_indices
from .refinement import Refinement, refine, refinement_box
from .report import markdown_report, orderings, plot_dice_vs_clicks, summarise_rounds, write_reports
from .samples import PredictLabeld, RefinementSampled, case_seed, image_spacing, matched_euclidean_scale, segment

__all__ = [
    "AUTOMATIC",
    "INTERACTIVE",
    "InteractiveEvaluation",
    "Round",
    "brain_box",
    "refine_clicks",
    "voxel_indices",
    "Refinement",
    "refine",
    "refinement_box",
    "markdown_report",
    "orderings",
    "plot_dice_vs_clicks",
    "summarise_rounds",
    "write_reports",
    "PredictLabeld",
    "RefinementSampled",
    "case_seed",
    "image_spacing",
    "matched_euclidean_scale",
    "segment",
]
