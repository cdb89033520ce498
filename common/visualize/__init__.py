"""Figures of images and segmentations, and of learned k-space line patterns across tasks.

``task_patterns`` is also a command (``python -m common.visualize.task_patterns``), so it is not imported here (as
``common.synthetic``): import ``common.visualize.task_patterns``.
"""

from __future__ import annotations

from .outlines import plot_outlines
