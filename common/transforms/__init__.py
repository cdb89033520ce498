"""Transforms by concept, each an array/dictionary pair: k-space, intensity, clicks, geodesic maps, labels, boundary
weights, I/O."""

from __future__ import annotations

from .clicks import (
    SimulateClicks,
    SimulateClicksd,
    clicks_per_region,
    clicks_to_seeds,
    paint_balls,
    simulate_clicks,
)
from .geodesic import BACKENDS, GeodesicMaps, GeodesicMapsd, geodesic_map, has_fastgeodis, has_geodistk
from .intensity import (
    HounsfieldUnits,
    HounsfieldUnitsd,
    ZScoreForeground,
    ZScoreForegroundd,
    ZScoreSlices,
    ZScoreSlicesd,
    zscore_slices,
)
from .io import SaveLggMasks, SaveLggMasksd
from .kspace import (
    FORWARD_MODELS,
    CenterLines,
    EquispacedLines,
    FullLines,
    KSpaceUndersample,
    KSpaceUndersampled,
    LearnedLines,
    OneSidedCenterLines,
    RandKSpaceUndersample,
    RandKSpaceUndersampled,
    RandomLines,
    apply_phase,
    broadcast_mask,
    check_forward_model,
    check_pe_dim,
    distinct_frequencies,
    line_mask,
    line_pattern,
    line_spectrum,
    load_line_pattern,
    num_lines,
    phase_seed,
    save_line_pattern,
    smooth_phase,
    undersample,
    undersample_lines,
)
from .labels import (
    BRATS_NESTED_CLASSES,
    ClassesToRegions,
    ClassesToRegionsd,
    ConvertBratsLabels,
    ConvertBratsLabelsd,
    MergeLesionMasks,
    MergeLesionMasksd,
)
from .weights import BoundaryWeight, BoundaryWeightd, boundary_weights
