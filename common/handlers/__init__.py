"""Ignite handlers: atomic checkpoints, checked checkpoint loading, evaluation reports."""

from __future__ import annotations

from .checkpoint_loader import CheckedCheckpointLoader
from .checkpoint_saver import AtomicCheckpointSaver
from .segmentation_report import SegmentationReport, markdown_report

__all__ = ["AtomicCheckpointSaver", "CheckedCheckpointLoader", "SegmentationReport", "markdown_report"]
