"""IGS: iterative gradient sampling of k-space lines, and the comparison of line patterns."""

from __future__ import annotations

from .comparison import CENTER_FRACTIONS, PatternComparison, fine_tune, volume_dice
from .fingerprint import check_fingerprint, data_digest, search_fingerprint, weights_digest
from .report import markdown_table, plot_dice_vs_acceleration, plot_igs_search
from .search import (
    FORWARD_MODELS,
    IterativeGradientSampling,
    cache_line_spectra,
    igs_loss,
    mask_gradient,
    network_input,
    slice_key,
)
