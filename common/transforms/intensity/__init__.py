"""Intensity transforms: per-slice z-scoring, z-scoring within a foreground, CT to Hounsfield units."""

from __future__ import annotations

from .array import HounsfieldUnits, ZScoreForeground, ZScoreSlices, zscore_slices
from .dictionary import HounsfieldUnitsd, ZScoreForegroundd, ZScoreSlicesd
