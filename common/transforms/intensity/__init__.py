"""Intensity transforms: per-slice z-scoring, per-channel percentile scaling."""

from __future__ import annotations

from .array import ZScoreSlices, zscore_slices
from .dictionary import ZScoreSlicesd
