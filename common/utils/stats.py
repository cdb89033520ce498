"""NaN-aware statistics for reports where a NaN means "not defined here" (a class absent, an empty mask)."""

from __future__ import annotations

import numpy as np

__all__ = ["nanmean"]


def nanmean(values: np.ndarray, axis: int | None = None) -> np.ndarray:
    """``np.nanmean`` without the warning: NaN where every value is NaN. float64, ``axis`` reduced."""
    values = np.asarray(values, dtype=np.float64)
    n = (~np.isnan(values)).sum(axis)
    return np.where(n > 0, np.nansum(values, axis) / np.maximum(n, 1), np.nan)
