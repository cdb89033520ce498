"""Ignite handlers: atomic checkpoints, checked checkpoint loading, evaluation reports."""

from __future__ import annotations

from .checkpoint_loader import CheckedCheckpointLoader
from .checkpoint_saver import AtomicCheckpointSaver
from .segmentation_report import SegmentationReport, markdown_report
from .vertebra_report import VertebraReport

__all__ = [
    "AtomicCheckpointSaver",
    "CheckedCheckpointLoader",
    "SegmentationReport",
    "markdown_report",
    "VertebraReport",
]
