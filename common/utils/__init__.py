"""Utilities: atomic file writes, centred FFTs, NaN-aware statistics."""

from __future__ import annotations

from .atomic_io import atomic_path, save_figure
from .fft import fft2c, fftc, ifft2c, ifftc
from .stats import nanmean
