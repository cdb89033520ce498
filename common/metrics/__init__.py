"""Segmentation metrics beyond MONAI's own: per-volume binary scores, surface distances per class."""

from __future__ import annotations

from .segmentation import SCORES, binary_volume_scores, summarise, surface_status
from .surface import EMPTY_MASK_CONVENTION, SurfaceDistances, surface_distances, surface_summary, surface_unit

__all__ = [
    "SCORES",
    "binary_volume_scores",
    "summarise",
    "surface_status",
    "EMPTY_MASK_CONVENTION",
    "SurfaceDistances",
    "surface_distances",
    "surface_summary",
    "surface_unit",
]
