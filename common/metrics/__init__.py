"""Segmentation metrics beyond MONAI's own."""

from __future__ import annotations

from .segmentation import SCORES, binary_volume_scores, summarise
