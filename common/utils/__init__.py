"""Utilities: atomic file writes, centred FFTs, NaN-aware statistics and paired bootstrap intervals, settings
fingerprints of saved state."""

from __future__ import annotations

from .atomic_io import atomic_path, save_figure
from .fft import fft2c, fftc, ifft2c, ifftc
from .fingerprint import as_fingerprint, check_fingerprint
from .stats import (
    N_RESAMPLES,
    MeanInterval,
    PairedDifference,
    bootstrap_mean,
    difference_columns,
    format_difference,
    format_mean_interval,
    format_resolution,
    group_by_case,
    mean_interval_columns,
    mean_interval_from_columns,
    nanmean,
    paired_bootstrap,
    paired_by_case,
)
