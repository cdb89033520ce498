"""Figures of images and segmentations."""

from __future__ import annotations

from .outlines import plot_outlines
