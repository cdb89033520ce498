"""Utilities: atomic file writes, centred FFTs."""

from __future__ import annotations

from .atomic_io import atomic_path, save_figure
from .fft import fft2c, fftc, ifft2c, ifftc
