"""An ignite handler that scores every volume's vertebra instances and writes the evaluation report (CSV per vertebra,
CSV per accepted instance, CSV per volume, the per-volume scores summarised over volumes with their intervals as CSV
and markdown, figure); under ``torchrun`` each rank scores its share of the volumes and rank 0 writes the report of all
of them."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from ignite.engine import Engine, Events

from common.metrics.instances import IDENTIFICATION_DICE, completeness_scores, instance_scores
from common.utils.atomic_io import atomic_path, write_csv_rows
from common.utils.distributed import dealt_index, gather_dealt, is_main_process
from common.utils.stats import N_RESAMPLES, MeanInterval, bootstrap_mean, format_mean_interval, mean_interval_columns

__all__ = ["VOLUME_SCORES", "VertebraReport"]

logger = logging.getLogger(__name__)

VOLUME_SCORES = {
    "mean_dice": ("Dice: mean over the volume's ground-truth vertebrae", 3),
    "mean_assd": ("ASSD (mm): mean over the volume's matched vertebrae", 2),
    "identification_rate": ("identification rate: fraction of the volume's vertebrae identified", 3),
    "false_positives": ("false-positive instances", 2),
    "missed": ("missed vertebrae", 2),
    "completeness_accuracy": ("completeness accuracy: the volume's scored decisions", 3),
    "steps": ("network evaluations of the traversal", 1),
    "seconds": ("seconds of the traversal", 1),
}
"""Per-volume scores summarised over volumes (those a volume row holds: the last three need the ``inferer``): label,
decimals."""


class VertebraReport:
    """For an evaluator over whole volumes whose ``pred`` and ``label`` are instance maps ``(1, *S)`` (one value per
    vertebra): :func:`~common.metrics.instance_scores` of each volume (one-to-one matching), and when the run
    completes ``<prefix>.csv`` (one row per ground-truth vertebra), ``<prefix>_volumes.csv`` (one row per volume: its
    summary and, with ``inferer``, the traversal's steps, end reason, seconds, instances accepted incomplete and the
    accuracy of its completeness decisions), ``<prefix>_instances.csv`` (with ``inferer``: one row per accepted
    instance: how it was accepted, its completeness decision and the truth, by
    :func:`~common.metrics.completeness_scores`), ``<prefix>_summary.csv`` (one row per score of
    :data:`VOLUME_SCORES`: mean, sample sd and the bootstrap interval of the mean over volumes,
    :func:`~common.utils.stats.bootstrap_mean`), ``<prefix>.md`` (that summary, the counts over all volumes and the
    volume rows) and ``<prefix>_dice.png`` (Dice per vertebra, one line per volume). The unit of the summary is the
    volume: per-vertebra Dice and ASSD are averaged within each volume first. With ``inferer`` the prediction must be
    on the traversal's grid (no inversion before this handler).

    Under ``torchrun``, with the evaluator's loader dealing the volumes over the ranks as MONAI's
    ``DistributedSampler(shuffle=False, even_divisible=False)`` does, each rank scores its own volumes (with its own
    ``inferer``); when the run completes they are gathered in the data set's order
    (:func:`~common.utils.distributed.gather_dealt`) and rank 0 writes the files, the same as one process
    writes.

    Args:
        output_dir, prefix: where and under which stem the files go.
        spacing: voxel size (mm) of the evaluated grid (1 mm after resampling).
        threshold: Dice above which a vertebra is identified.
        inferer: an :class:`~common.apps.iterative_fcn.IterativeInferer` whose ``history`` holds the traversals.
        complete_fraction: a vertebra is complete in a patch holding at least this fraction of its voxels (the
            training label's rule, :class:`~common.apps.iterative_fcn.InstanceSampled`).
        name_key: batch key naming each volume.
        n_resamples, seed: bootstrap resamples of the volumes and their seed, for the intervals.
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
        n_resamples: int = N_RESAMPLES,
        seed: int = 0,
    ) -> None:
        self.output_dir, self.prefix = Path(output_dir), prefix
        self.n_resamples, self.seed = n_resamples, seed
        self.spacing, self.threshold, self.inferer = spacing, threshold, inferer
        self.complete_fraction = complete_fraction
        self.name_key, self.pred_key, self.label_key = name_key, pred_key, label_key
        self.records: list[tuple[dict, list[dict], list[dict]]] = []  # per volume: its row, vertebrae, instances

    @property
    def volumes(self) -> list[dict]:
        """One row per volume seen so far."""
        return [volume for volume, _, _ in self.records]

    @property
    def rows(self) -> list[dict]:
        """One row per ground-truth vertebra of the volumes seen so far."""
        return [row for _, rows, _ in self.records for row in rows]

    @property
    def instances(self) -> list[dict]:
        """One row per accepted instance of the volumes seen so far (with ``inferer``)."""
        return [row for _, _, instances in self.records for row in instances]

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, self._reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._collect)
        engine.add_event_handler(Events.COMPLETED, self._complete)

    def _reset(self, engine: Engine) -> None:
        self.records = []

    def _collect(self, engine: Engine) -> None:
        outputs, batches = engine.state.output, engine.state.batch
        if isinstance(outputs, Mapping):
            outputs, batches = [outputs], [batches]
        for out, batch in zip(outputs, batches):
            item = {**batch, **out}
            name = item.get(self.name_key, dealt_index(len(self.records)))
            name = str(name[0] if isinstance(name, (list, tuple)) else name)
            pred = torch.as_tensor(item[self.pred_key]).cpu().numpy()[0]
            label = torch.as_tensor(item[self.label_key]).cpu().numpy()[0]
            rows, summary = instance_scores(pred, label, self.spacing, self.threshold)
            volume, instances = {"case": name, **summary}, []
            last = getattr(self.inferer, "last", None)
            if last is not None:
                per_instance, completeness = completeness_scores(
                    label, rows, last.instances, last.patch_size, self.complete_fraction
                )
                accepted = {i["label"]: i["accepted"] for i in last.instances}
                instances = [{"case": name, "accepted": accepted[r["instance"]], **r} for r in per_instance]
                incomplete = sum(not i["complete"] for i in last.instances)
                volume.update(steps=last.steps, end=last.reason, seconds=round(last.seconds, 3))
                volume.update(accepted_incomplete=incomplete, **completeness)
            self.records.append((volume, [{"case": name, **r} for r in rows], instances))

    def _complete(self, engine: Engine) -> None:
        """Every rank's volumes, in the data set's order, on every rank; rank 0 writes them."""
        self.records = gather_dealt(self.records)
        if is_main_process():
            self.write()

    def summary(self) -> dict[str, MeanInterval]:
        """Each score of :data:`VOLUME_SCORES` the volumes hold, over the volumes seen so far: mean, sample sd and
        the percentile interval of the mean (``n_resamples`` bootstrap resamples of the volumes from ``seed``; a
        volume where the score is undefined, NaN, is left out and counted)."""
        return {
            key: bootstrap_mean(np.array([v[key] for v in self.volumes], dtype=float), self.n_resamples, self.seed)
            for key in VOLUME_SCORES
            if key in self.volumes[0]
        }

    def counts(self) -> dict[str, int]:
        """Totals over the volumes seen so far: volumes, vertebrae, identified, missed, false-positive instances and,
        with ``inferer``, the completeness decisions scored and the instances accepted incomplete."""
        out = {
            "volumes": len(self.volumes),
            "vertebrae": len(self.rows),
            "identified": int(sum(r["identified"] for r in self.rows)),
            "missed": int(sum(v["missed"] for v in self.volumes)),
            "false_positives": int(sum(v["false_positives"] for v in self.volumes)),
        }
        if "steps" in self.volumes[0]:
            out["completeness_scored"] = int(sum(v["completeness_scored"] for v in self.volumes))
            out["accepted_incomplete"] = int(sum(v["accepted_incomplete"] for v in self.volumes))
        return out

    def write(self) -> dict[str, float]:
        """Write the files for the volumes seen so far; returns the :meth:`counts` and, per score of
        :meth:`summary`, ``<score>_mean``, ``<score>_sd``, ``<score>_ci_low`` and ``<score>_ci_high``."""
        if not self.volumes:
            raise ValueError("VertebraReport: expected at least one evaluated volume, found none")
        summary, counts = self.summary(), self.counts()
        self.output_dir.mkdir(parents=True, exist_ok=True)
        if self.rows:
            write_csv_rows(self.output_dir / f"{self.prefix}.csv", self.rows)
        if self.instances:
            write_csv_rows(self.output_dir / f"{self.prefix}_instances.csv", self.instances)
        write_csv_rows(self.output_dir / f"{self.prefix}_volumes.csv", self.volumes)
        write_csv_rows(
            self.output_dir / f"{self.prefix}_summary.csv",
            [{"score": k, **mean_interval_columns("", m), "dropped": m.dropped} for k, m in summary.items()],
        )
        with atomic_path(self.output_dir / f"{self.prefix}.md") as tmp:
            tmp.write_text(self._markdown(summary, counts))
        self._plot(self.output_dir / f"{self.prefix}_dice.png")
        total: dict[str, float] = dict(counts)
        for k, m in summary.items():
            total.update({f"{k}_mean": m.mean, f"{k}_sd": m.sd, f"{k}_ci_low": m.low, f"{k}_ci_high": m.high})
        logger.info("vertebra evaluation: %s", total)
        return total

    def _markdown(self, summary: Mapping[str, MeanInterval], counts: Mapping[str, int]) -> str:
        dice = summary["mean_dice"]
        out = [
            f"{counts['volumes']} volumes, {counts['vertebrae']} ground-truth vertebrae. Vertebrae and predicted "
            "instances are matched one to one (largest summed Dice); identified: Dice > "
            f"{self.threshold}; missed: no match; ASSD in mm over matched vertebrae; a false positive is a predicted "
            "instance not matched to a vertebra with Dice above the threshold. Completeness accuracy: the "
            "completeness head's decision on each matched accepted instance against the training rule (at least "
            f"{self.complete_fraction} of the vertebra's voxels in the instance's patch).",
            "",
            "The unit is the volume: each volume's Dice is the mean over its ground-truth vertebrae and its ASSD the "
            "mean over its matched vertebrae, and these per-volume values are then averaged over the volumes (a volume "
            "with few vertebrae weighs as much as one with many). Each cell: mean +- sample sd over volumes "
            f"[percentile 95 % interval of the mean, {self.n_resamples:,} bootstrap resamples of the volumes, seed "
            f"{self.seed}]; volumes: those where the score is defined."
            + (
                f" With {dice.n} volumes the interval of the mean Dice reaches {(dice.high - dice.low) / 2:.3f} "
                "either side of it on average: the mean is known no better than that."
                if dice.n > 1
                else ""
            ),
            "",
            "| score (per volume) | mean +- sd [95 % CI] | volumes |",
            "|---|---|---|",
        ]
        out += [
            f"| {VOLUME_SCORES[k][0]} (`{k}`) | {format_mean_interval(m, VOLUME_SCORES[k][1])} | {m.n} |"
            for k, m in summary.items()
        ]
        out += ["", "| count over all volumes | value |", "|---|---|"]
        out += [f"| {k} | {v} |" for k, v in counts.items()]
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
        for volume, rows, _ in self.records:
            ax.plot([r["vertebra"] for r in rows], [r["dice"] for r in rows], "o-", label=volume["case"], ms=3)
        ax.axhline(self.threshold, color="grey", ls="--", lw=0.8)
        ax.set(xlabel="vertebra (label value)", ylabel="Dice", ylim=(-0.02, 1.02), title="Dice per vertebra")
        if len(self.records) <= 10:
            ax.legend(fontsize=6)
        fig.tight_layout()
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=100)
        plt.close(fig)
