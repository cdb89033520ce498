"""Ignite handlers: atomic checkpoints, evaluation reports, metric output transforms."""

from __future__ import annotations

from .checkpoint_saver import AtomicCheckpointSaver
from .segmentation_report import SegmentationReport, markdown_report
from .utils import class_channel
