"""Figures of images and segmentations, and of learned k-space line patterns across tasks."""

from __future__ import annotations

from .outlines import plot_outlines
from .task_patterns import load_task_patterns, plot_task_patterns
