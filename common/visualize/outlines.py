"""Figures of segmentations: ground-truth and predicted outlines on image slices."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from common.utils.atomic_io import save_figure

__all__ = ["plot_outlines"]


def plot_outlines(panels: Sequence[Mapping], path: str | Path) -> Path:
    """One panel per entry (``image``, ``label``, ``pred`` 2D, ``title``): grey image, ground truth outlined in
    green, prediction in red (PNG)."""
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    fig = Figure(figsize=(3.2 * len(panels), 3.8), layout="constrained")
    axes = fig.subplots(1, len(panels), squeeze=False)
    for ax, panel in zip(axes[0], panels):
        ax.imshow(panel["image"], cmap="gray")
        for mask, colour in ((panel["label"], "lime"), (panel["pred"], "red")):
            if mask.any():
                ax.contour(mask.astype(float), levels=[0.5], colors=colour, linewidths=1.0)
        ax.set_title(panel["title"], fontsize=8)
        ax.axis("off")
    lines = [Line2D([], [], color=c, label=n) for c, n in (("lime", "ground truth"), ("red", "prediction"))]
    axes[0][0].legend(handles=lines, loc="lower left", fontsize=7, framealpha=0.8)
    return save_figure(fig, path)
