"""An ignite handler that scores every evaluated volume and writes the evaluation report (CSV, markdown, figure); under
``torchrun`` each rank scores its share of the volumes and rank 0 writes the report of all of them."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from ignite.engine import Engine, Events

from common.metrics.segmentation import SCORES, binary_volume_scores, summarise
from common.metrics.surface import EMPTY_MASK_CONVENTION
from common.utils.atomic_io import atomic_path, write_csv_rows
from common.utils.distributed import dealt_index, gather_dealt, is_main_process
from common.visualize.outlines import plot_outlines

__all__ = ["SegmentationReport", "markdown_report"]

logger = logging.getLogger(__name__)


class SegmentationReport:
    """An ignite handler for an evaluator over whole volumes: scores every volume with :func:`binary_volume_scores`
    (Dice, and HD95 / ASSD in mm with ``spacing`` or in pixels without) and, when the run completes, writes
    ``<prefix>.csv`` (one row per volume), ``<prefix>.md`` (mean and spread over volumes, the empty-mask counts of the
    surface distances, then the rows) and ``<prefix>_slices.png`` (for the first ``figure_cases`` volumes, the slice
    with the most ground-truth foreground: the image channel ``figure_channel`` with ground-truth and prediction
    outlines).

    Under ``torchrun``, with the evaluator's loader dealing the volumes over the ranks as MONAI's
    ``DistributedSampler(shuffle=False, even_divisible=False)`` does, each rank scores its own volumes; when the run
    completes they are gathered in the data set's order (:func:`~common.utils.distributed.gather_dealt`) and rank 0 writes the files, the same
    as one process writes.

    Args:
        output_dir: where the three files go.
        prefix: file name stem.
        name_key: batch key naming each volume (e.g. the patient); the volume's index if absent.
        slices_key: optional batch key with the slice numbers ``(D,)`` (for the figure titles).
        figure_channel: image channel shown in the figure (1: FLAIR in the LGG order).
        figure_cases: number of volumes shown.
        spacing: voxel size ``(3,)`` in mm along H, W and the slice axis, for every volume; None (kaggle_3m tifs
            carry no geometry): 1 per pixel along H and W and 1 per slice, reported as ``hd95_px`` / ``assd_px``.
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
        spacing: Sequence[float] | None = None,
    ) -> None:
        if figure_cases < 0 or figure_channel < 0:
            raise ValueError(f"figure_cases, figure_channel: expected >= 0, found {figure_cases}, {figure_channel}")
        if spacing is not None and (len(spacing) != 3 or not all(float(s) > 0 for s in spacing)):
            raise ValueError(f"spacing: expected 3 positive sizes in mm (H, W, slice) or None, found {spacing}")
        self.spacing = None if spacing is None else tuple(float(s) for s in spacing)
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
        engine.add_event_handler(Events.COMPLETED, self._complete)

    def _reset(self, engine: Engine) -> None:
        self.rows, self.panels = [], []

    def _collect(self, engine: Engine) -> None:
        outputs, batches = engine.state.output, engine.state.batch
        if isinstance(outputs, Mapping):  # not decollated: one volume per batch
            outputs, batches = [outputs], [batches]
        for out, batch in zip(outputs, batches):
            item = {**batch, **out}
            name = str(item.get(self.name_key, dealt_index(len(self.rows))))
            scores = binary_volume_scores(item[self.pred_key], item[self.label_key], self.spacing)
            self.rows.append({"name": name, **scores})
            if len(self.panels) < self.figure_cases:
                self.panels.append(self._panel(item, name, scores))

    def _complete(self, engine: Engine) -> None:
        """Every rank's rows and the first ``figure_cases`` panels, in the data set's order, on every rank; rank 0
        writes them."""
        self.rows = gather_dealt(self.rows)
        self.panels = gather_dealt(self.panels)[: self.figure_cases]
        if is_main_process():
            self.write()

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
        # Not monai.handlers.utils.write_metrics_reports: it writes one <metric>_raw.csv per score with an extra
        # "mean over classes" column (for one binary class a copy of the value; over a row mixing Dice and mm it would
        # average incompatible units), formats every value as a float (the voxel counts and the surface status here
        # are ints and strings), and writes with plain open() into fixed names (metrics.csv), not atomically as every
        # other output here. One row per volume with all scores, written atomically, is what readers of this CSV use.
        write_csv_rows(self.output_dir / f"{self.prefix}.csv", self.rows)
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
    """Markdown: the summary over volumes (one line per score, units in its name), the counts of volumes without
    surface distances (when rows carry ``surface``, see :func:`~common.metrics.surface_status`), then one line per
    volume."""
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
    if rows and "surface" in rows[0]:
        counts = {k: sum(r["surface"] == k for r in rows) for k in ("measured", "missed", "spurious", "absent")}
        out += [
            "",
            f"Surface distances (HD95, ASSD) measured in {counts['measured']} volumes; {counts['missed']} missed "
            f"(empty prediction), {counts['spurious']} spurious (empty ground truth), {counts['absent']} with both "
            f"masks empty. {EMPTY_MASK_CONVENTION}",
        ]
    keys = list(rows[0])
    out += ["", "| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    out += [
        "| " + " | ".join(f"{r[k]:.4f}" if isinstance(r[k], float) else str(r[k]) for k in keys) + " |" for r in rows
    ]
    return "\n".join(out) + "\n"
