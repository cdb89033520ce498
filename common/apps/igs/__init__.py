"""IGS: iterative gradient sampling of k-space lines, LOUPE, and the comparison of line patterns."""

from __future__ import annotations

from .brats import BRATS_REGION_CLASSES, brats_slices, case_slices, load_brats_case
from .comparison import BASELINES, CENTER_FRACTIONS, PATTERN_SOURCES, SEEDED, PatternComparison, learned_pattern_file
from .evaluation import fine_tune, pooled_dice, predict_slices, volume_dice, volume_keys, volume_surface_distances
from .fingerprint import acquisition_settings, check_fingerprint, data_digest, search_fingerprint, weights_digest
from .intervals import (
    INTERVAL_COLUMNS,
    finding,
    intervals_markdown,
    intervals_unavailable,
    paired_intervals,
    per_volume,
    rank_baselines,
)
from .loupe import (
    CLIP_NORM,
    LOUPE,
    PROB_SLOPE,
    SAMPLE_SLOPE,
    relaxed_line_mask,
    renormalize_probability,
    top_lines,
    triangle_logits,
)
from .objective import (
    FORWARD_MODELS,
    FP16_LOSS_SCALE,
    LOSSES,
    Batches,
    LossFn,
    Normalize,
    RankBatches,
    autocast_settings,
    cache_line_spectra,
    cache_rank_batches,
    igs_loss,
    mask_gradient,
    mask_loss,
    network_input,
    network_logits,
    pick_ties,
    rank_lines,
    slice_key,
)
from .report import (
    FORWARD_MODEL_NOTES,
    format_mean_sd,
    markdown_table,
    mean_sd,
    plot_channel_patterns,
    plot_dice_vs_acceleration,
    plot_igs_search,
    plot_loupe_loss,
    search_loss_table,
)
from .search import GUARDS, REFINE_MODES, STARTS, IterativeGradientSampling
from .seeds import network_seeds
from .tasks import (
    TASKS,
    ClassificationScores,
    ReconstructionScores,
    SegmentationScores,
    pattern_scores,
    task_slices,
)
