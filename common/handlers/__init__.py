"""Ignite handlers: atomic checkpoints, checked checkpoint loading, evaluation reports, per-slice class
probabilities."""

from __future__ import annotations

from .checkpoint_loader import CheckedCheckpointLoader
from .checkpoint_saver import AtomicCheckpointSaver
from .segmentation_report import SegmentationReport, markdown_report
from .slice_classification_saver import SliceClassificationSaver
from .vertebra_report import VertebraReport

__all__ = [
    "AtomicCheckpointSaver",
    "CheckedCheckpointLoader",
    "SegmentationReport",
    "markdown_report",
    "SliceClassificationSaver",
    "VertebraReport",
]
