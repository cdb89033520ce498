"""An ignite handler that scores every volume's vertebra instances and writes the evaluation report (CSV per vertebra,
CSV per accepted instance, CSV per volume, markdown, figure)."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from ignite.engine import Engine, Events

from common.metrics.instances import IDENTIFICATION_DICE, completeness_scores, instance_scores
from common.utils.atomic_io import atomic_path, write_csv_rows

__all__ = ["VertebraReport"]

logger = logging.getLogger(__name__)


class VertebraReport:
    """For an evaluator over whole volumes whose ``pred`` and ``label`` are instance maps ``(1, *S)`` (one value per
    vertebra): :func:`~common.metrics.instance_scores` of each volume (one-to-one matching), and when the run
    completes ``<prefix>.csv`` (one row per ground-truth vertebra), ``<prefix>_volumes.csv`` (one row per volume: its
    summary and, with ``inferer``, the traversal's steps, end reason, seconds, instances accepted incomplete and the
    accuracy of its completeness decisions), ``<prefix>_instances.csv`` (with ``inferer``: one row per accepted
    instance: how it was accepted, its completeness decision and the truth, by
    :func:`~common.metrics.completeness_scores`),
    ``<prefix>.md`` (means over vertebrae and volumes) and ``<prefix>_dice.png`` (Dice per vertebra, one line per
    volume). With ``inferer`` the prediction must be on the traversal's grid (no inversion before this handler).

    Args:
        output_dir, prefix: where and under which stem the files go.
        spacing: voxel size (mm) of the evaluated grid (1 mm after resampling).
        threshold: Dice above which a vertebra is identified.
        inferer: an :class:`~common.apps.iterative_fcn.IterativeInferer` whose ``history`` holds the traversals.
        complete_fraction: a vertebra is complete in a patch holding at least this fraction of its voxels (the
            training label's rule, :class:`~common.apps.iterative_fcn.InstanceSampled`).
        name_key: batch key naming each volume.
    """

    def __init__(
        self,
        output_dir: str | Path,
        prefix: str = "evaluation",
        spacing: Sequence[float] | None = (1.0, 1.0, 1.0),
        threshold: float = IDENTIFICATION_DICE,
        inferer: object | None = None,
        complete_fraction: float = 0.98,
        name_key: str = "case",
        pred_key: str = "pred",
        label_key: str = "label",
    ) -> None:
        self.output_dir, self.prefix = Path(output_dir), prefix
        self.spacing, self.threshold, self.inferer = spacing, threshold, inferer
        self.complete_fraction = complete_fraction
        self.name_key, self.pred_key, self.label_key = name_key, pred_key, label_key
        self.rows: list[dict] = []
        self.instances: list[dict] = []
        self.volumes: list[dict] = []

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, self._reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._collect)
        engine.add_event_handler(Events.COMPLETED, lambda e: self.write())

    def _reset(self, engine: Engine) -> None:
        self.rows, self.instances, self.volumes = [], [], []

    def _collect(self, engine: Engine) -> None:
        outputs, batches = engine.state.output, engine.state.batch
        if isinstance(outputs, Mapping):
            outputs, batches = [outputs], [batches]
        for out, batch in zip(outputs, batches):
            item = {**batch, **out}
            name = item.get(self.name_key, len(self.volumes))
            name = str(name[0] if isinstance(name, (list, tuple)) else name)
            pred = torch.as_tensor(item[self.pred_key]).cpu().numpy()[0]
            label = torch.as_tensor(item[self.label_key]).cpu().numpy()[0]
            rows, summary = instance_scores(pred, label, self.spacing, self.threshold)
            self.rows += [{"case": name, **r} for r in rows]
            volume = {"case": name, **summary}
            last = getattr(self.inferer, "last", None)
            if last is not None:
                per_instance, completeness = completeness_scores(
                    label, rows, last.instances, last.patch_size, self.complete_fraction
                )
                accepted = {i["label"]: i["accepted"] for i in last.instances}
                self.instances += [{"case": name, "accepted": accepted[r["instance"]], **r} for r in per_instance]
                incomplete = sum(not i["complete"] for i in last.instances)
                volume.update(steps=last.steps, end=last.reason, seconds=round(last.seconds, 3))
                volume.update(accepted_incomplete=incomplete, **completeness)
            self.volumes.append(volume)

    def write(self) -> dict[str, float]:
        """Write the files for the volumes seen so far; returns the means over vertebrae and volumes."""
        if not self.volumes:
            raise ValueError("VertebraReport: expected at least one evaluated volume, found none")
        dice = np.array([r["dice"] for r in self.rows], dtype=float)
        assd = np.array([r["assd"] for r in self.rows], dtype=float)
        total = {
            "vertebrae": len(self.rows),
            "mean_dice": float(dice.mean()) if dice.size else float("nan"),
            "std_dice": float(dice.std()) if dice.size else float("nan"),
            "mean_assd_mm": float(np.nanmean(assd)) if np.isfinite(assd).any() else float("nan"),
            "identification_rate": float(np.mean([r["identified"] for r in self.rows])) if self.rows else float("nan"),
            "missed": int(sum(v["missed"] for v in self.volumes)),
            "false_positives": int(sum(v["false_positives"] for v in self.volumes)),
        }
        if "steps" in self.volumes[0]:
            scored = [r["correct"] for r in self.instances if r["correct"] is not None]
            total["completeness_accuracy"] = float(np.mean(scored)) if scored else float("nan")
            total["completeness_scored"] = len(scored)
            total["accepted_incomplete"] = int(sum(v["accepted_incomplete"] for v in self.volumes))
            total["mean_steps"] = float(np.mean([v["steps"] for v in self.volumes]))
            total["mean_seconds"] = float(np.mean([v["seconds"] for v in self.volumes]))
        self.output_dir.mkdir(parents=True, exist_ok=True)
        if self.rows:
            write_csv_rows(self.output_dir / f"{self.prefix}.csv", self.rows)
        if self.instances:
            write_csv_rows(self.output_dir / f"{self.prefix}_instances.csv", self.instances)
        write_csv_rows(self.output_dir / f"{self.prefix}_volumes.csv", self.volumes)
        with atomic_path(self.output_dir / f"{self.prefix}.md") as tmp:
            tmp.write_text(self._markdown(total))
        self._plot(self.output_dir / f"{self.prefix}_dice.png")
        logger.info("vertebra evaluation: %s", total)
        return total

    def _markdown(self, total: Mapping[str, float]) -> str:
        out = [
            f"{len(self.volumes)} volumes, {total['vertebrae']} ground-truth vertebrae. Vertebrae and predicted "
            "instances are matched one to one (largest summed Dice); identified: Dice > "
            f"{self.threshold}; missed: no match; ASSD in mm over matched vertebrae; a false positive is a predicted "
            "instance not matched to a vertebra with Dice above the threshold. Completeness accuracy: the "
            "completeness head's decision on each matched accepted instance against the training rule (at least "
            f"{self.complete_fraction} of the vertebra's voxels in the instance's patch).",
            "",
            "| score | value |",
            "|---|---|",
        ]
        out += [f"| {k} | {v:.4f} |" if isinstance(v, float) else f"| {k} | {v} |" for k, v in total.items()]
        cols = list(self.volumes[0])
        out += ["", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
        for v in self.volumes:
            out.append("| " + " | ".join(f"{v[c]:.4f}" if isinstance(v[c], float) else str(v[c]) for c in cols) + " |")
        return "\n".join(out) + "\n"

    def _plot(self, path: Path) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(7, 3.5))
        for v in self.volumes:
            rows = [r for r in self.rows if r["case"] == v["case"]]
            ax.plot([r["vertebra"] for r in rows], [r["dice"] for r in rows], "o-", label=v["case"], ms=3)
        ax.axhline(self.threshold, color="grey", ls="--", lw=0.8)
        ax.set(xlabel="vertebra (label value)", ylabel="Dice", ylim=(-0.02, 1.02), title="Dice per vertebra")
        if len(self.volumes) <= 10:
            ax.legend(fontsize=6)
        fig.tight_layout()
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=100)
        plt.close(fig)
