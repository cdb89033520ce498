"""K-space line patterns, undersampling functions and the array/dictionary transform pair."""

from __future__ import annotations

from .array import KSpaceUndersample, RandKSpaceUndersample
from .dictionary import KSpaceUndersampled, RandKSpaceUndersampled
from .functional import broadcast_mask, check_pe_dim, line_spectrum, undersample, undersample_lines
from .masks import (
    CenterLines,
    EquispacedLines,
    FullLines,
    LearnedLines,
    MaskFactory,
    OneSidedCenterLines,
    RandomLines,
    distinct_frequencies,
    line_mask,
    line_pattern,
    load_line_pattern,
    num_lines,
    save_line_pattern,
)
from .phase import FORWARD_MODELS, apply_phase, check_forward_model, phase_seed, smooth_phase
