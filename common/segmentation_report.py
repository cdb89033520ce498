"""Evaluation report for binary volume segmentation: Dice per volume (raw and largest 3D component) and per slice."""

from __future__ import annotations

import csv
import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from ignite.engine import Engine, Events
from monai.config import NdarrayOrTensor
from monai.metrics import compute_dice
from monai.transforms import KeepLargestConnectedComponent

from common.atomic_io import atomic_path, save_figure

__all__ = ["SCORES", "binary_volume_scores", "summarise", "SegmentationReport", "markdown_report", "plot_outlines"]

logger = logging.getLogger(__name__)

SCORES = {
    "dice_volume": "Dice per volume",
    "dice_volume_lcc": "Dice per volume, largest 3D component kept",
    "dice_slice_tumour": "Dice per slice, slices with foreground in the ground truth",
    "dice_slice_all": "Dice per slice, all slices (empty vs empty = 1)",
}


def binary_volume_scores(pred: NdarrayOrTensor, label: NdarrayOrTensor) -> dict[str, float]:
    """Scores of one binary prediction against its ground truth, both ``(1, H, W, D)`` (``D`` the slice axis,
    foreground > 0.5).

    Returns the :data:`SCORES` (``dice_volume`` over the stacked slices; ``dice_volume_lcc`` after keeping only the
    largest 3D connected component of the prediction, full connectivity, as in Buda et al.'s post-processing;
    ``dice_slice_tumour`` the mean over slices with ground-truth foreground, NaN if there are none; ``dice_slice_all``
    the mean over all slices), plus ``slices``, ``tumour_slices``, ``label_voxels`` and ``pred_voxels``. A volume
    whose ground truth is empty scores 1 if the prediction is empty too, else 0.
    """
    p = (torch.as_tensor(pred) > 0.5).float().cpu()
    g = (torch.as_tensor(label) > 0.5).float().cpu()
    if p.shape != g.shape or p.ndim != 4 or p.shape[0] != 1:
        raise ValueError(
            f"binary_volume_scores: expected pred and label of equal shape (1, H, W, D), found "
            f"{tuple(p.shape)} and {tuple(g.shape)}"
        )
    lcc = torch.as_tensor(KeepLargestConnectedComponent(is_onehot=False)(p.clone())).float()  # it works in place
    per_slice = compute_dice(p.permute(3, 0, 1, 2), g.permute(3, 0, 1, 2), ignore_empty=False)[:, 0]
    tumour = g.flatten(0, 2).sum(0) > 0
    return {
        "dice_volume": float(compute_dice(p[None], g[None], ignore_empty=False)),
        "dice_volume_lcc": float(compute_dice(lcc[None], g[None], ignore_empty=False)),
        "dice_slice_tumour": float(per_slice[tumour].mean()) if tumour.any() else math.nan,
        "dice_slice_all": float(per_slice.mean()),
        "slices": int(p.shape[-1]),
        "tumour_slices": int(tumour.sum()),
        "label_voxels": int(g.sum()),
        "pred_voxels": int(p.sum()),
    }


def summarise(rows: Sequence[Mapping[str, float]], keys: Sequence[str] = tuple(SCORES)) -> dict[str, dict[str, float]]:
    """Mean, standard deviation (population), median, min, max and count over ``rows`` of each key, NaN left out."""
    out = {}
    for key in keys:
        values = np.array([r[key] for r in rows], dtype=np.float64)
        v = values[~np.isnan(values)]
        if v.size:
            out[key] = {
                "mean": float(v.mean()),
                "std": float(v.std()),
                "median": float(np.median(v)),
                "min": float(v.min()),
                "max": float(v.max()),
                "n": int(v.size),
            }
        else:
            out[key] = {**dict.fromkeys(("mean", "std", "median", "min", "max"), math.nan), "n": 0}
    return out


class SegmentationReport:
    """An ignite handler for an evaluator over whole volumes: scores every volume with :func:`binary_volume_scores`
    and, when the run completes, writes ``<prefix>.csv`` (one row per volume), ``<prefix>.md`` (mean and spread over
    volumes, then the rows) and ``<prefix>_slices.png`` (for the first ``figure_cases`` volumes, the slice with the
    most ground-truth foreground: the image channel ``figure_channel`` with ground-truth and prediction outlines).

    Args:
        output_dir: where the three files go.
        prefix: file name stem.
        name_key: batch key naming each volume (e.g. the patient); the volume's index if absent.
        slices_key: optional batch key with the slice numbers ``(D,)`` (for the figure titles).
        figure_channel: image channel shown in the figure (1: FLAIR in the LGG order).
        figure_cases: number of volumes shown.
        pred_key, label_key, image_key: keys of the post-processed engine output; ``pred`` and ``label``
            ``(1, H, W, D)`` binary, ``image`` ``(C, H, W, D)``.
    """

    def __init__(
        self,
        output_dir: str | Path,
        prefix: str = "evaluation",
        name_key: str = "patient",
        slices_key: str = "slices",
        figure_channel: int = 1,
        figure_cases: int = 4,
        pred_key: str = "pred",
        label_key: str = "label",
        image_key: str = "image",
    ) -> None:
        if figure_cases < 0 or figure_channel < 0:
            raise ValueError(f"figure_cases, figure_channel: expected >= 0, found {figure_cases}, {figure_channel}")
        self.output_dir = Path(output_dir)
        self.prefix = prefix
        self.name_key, self.slices_key = name_key, slices_key
        self.figure_channel, self.figure_cases = figure_channel, figure_cases
        self.pred_key, self.label_key, self.image_key = pred_key, label_key, image_key
        self.rows: list[dict] = []
        self.panels: list[dict] = []

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, self._reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._collect)
        engine.add_event_handler(Events.COMPLETED, lambda e: self.write())

    def _reset(self, engine: Engine) -> None:
        self.rows, self.panels = [], []

    def _collect(self, engine: Engine) -> None:
        outputs, batches = engine.state.output, engine.state.batch
        if isinstance(outputs, Mapping):  # not decollated: one volume per batch
            outputs, batches = [outputs], [batches]
        for out, batch in zip(outputs, batches):
            item = {**batch, **out}
            name = str(item.get(self.name_key, len(self.rows)))
            scores = binary_volume_scores(item[self.pred_key], item[self.label_key])
            self.rows.append({"name": name, **scores})
            if len(self.panels) < self.figure_cases:
                self.panels.append(self._panel(item, name, scores))

    def _panel(self, item: Mapping, name: str, scores: Mapping[str, float]) -> dict:
        label = torch.as_tensor(item[self.label_key])[0].cpu() > 0.5
        k = int(label.flatten(0, 1).sum(0).argmax())
        slices = item.get(self.slices_key)
        number = int(torch.as_tensor(slices).flatten()[k]) if slices is not None else k
        return {
            "title": f"{name} slice {number}\nvolume Dice {scores['dice_volume']:.3f}",
            "image": torch.as_tensor(item[self.image_key])[self.figure_channel, ..., k].float().cpu().numpy(),
            "label": label[..., k].numpy(),
            "pred": (torch.as_tensor(item[self.pred_key])[0, ..., k].cpu() > 0.5).numpy(),
        }

    def write(self) -> dict[str, dict[str, float]]:
        """Write the CSV, markdown and figure for the volumes seen so far; returns :func:`summarise` of them."""
        if not self.rows:
            raise ValueError("SegmentationReport: expected at least one evaluated volume, found none")
        summary = summarise(self.rows)
        self.output_dir.mkdir(parents=True, exist_ok=True)
        with atomic_path(self.output_dir / f"{self.prefix}.csv") as tmp:
            with open(tmp, "w", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=list(self.rows[0]))
                writer.writeheader()
                writer.writerows(self.rows)
        with atomic_path(self.output_dir / f"{self.prefix}.md") as tmp:
            tmp.write_text(markdown_report(self.rows, summary))
        if self.panels:
            plot_outlines(self.panels, self.output_dir / f"{self.prefix}_slices.png")
        for key, s in summary.items():
            logger.info(
                "%s: mean %.4f, std %.4f, median %.4f over %d volumes", key, s["mean"], s["std"], s["median"], s["n"]
            )
        return summary


def markdown_report(rows: Sequence[Mapping], summary: Mapping[str, Mapping[str, float]]) -> str:
    """Markdown: the summary over volumes (one line per score), then one line per volume."""
    n_slices = sum(r["slices"] for r in rows)
    out = [
        f"{len(rows)} volumes ({n_slices} slices). Spread over volumes: population std, median, min, max.",
        "",
        "| score | mean | std | median | min | max | volumes |",
        "|---|---|---|---|---|---|---|",
    ]
    for key, s in summary.items():
        out.append(
            f"| {SCORES.get(key, key)} | {s['mean']:.4f} | {s['std']:.4f} | {s['median']:.4f} | "
            f"{s['min']:.4f} | {s['max']:.4f} | {s['n']} |"
        )
    keys = list(rows[0])
    out += ["", "| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    out += [
        "| " + " | ".join(f"{r[k]:.4f}" if isinstance(r[k], float) else str(r[k]) for k in keys) + " |" for r in rows
    ]
    return "\n".join(out) + "\n"


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
