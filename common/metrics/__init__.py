"""Segmentation metrics beyond MONAI's own: per-volume binary scores, surface distances per class,
instance (per-vertebra) scores, lesion scores (paper and ATLAS challenge)."""

from __future__ import annotations

from .instances import IDENTIFICATION_DICE, completeness_scores, instance_scores
from .lesion import LESION_SCORES, lesion_components, lesion_f1, lesion_scores, micro_dice
from .segmentation import SCORES, binary_volume_scores, summarise, surface_status
from .surface import EMPTY_MASK_CONVENTION, SurfaceDistances, surface_distances, surface_summary, surface_unit

__all__ = [
    "IDENTIFICATION_DICE",
    "instance_scores",
    "completeness_scores",
    "LESION_SCORES",
    "lesion_components",
    "lesion_f1",
    "lesion_scores",
    "micro_dice",
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
