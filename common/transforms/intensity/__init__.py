"""Intensity transforms: per-slice z-scoring, z-scoring within a foreground."""

from __future__ import annotations

from .array import ZScoreForeground, ZScoreSlices, zscore_slices
from .dictionary import ZScoreForegroundd, ZScoreSlicesd
