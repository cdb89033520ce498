"""An ignite handler that writes per-slice class probabilities of whole volumes to one CSV (a row per volume and
slice)."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from ignite.engine import Engine, Events

from common.utils.atomic_io import write_csv_rows

__all__ = ["SliceClassificationSaver"]

logger = logging.getLogger(__name__)


class SliceClassificationSaver:
    """An ignite handler for an evaluator whose post-processed ``pred`` holds class probabilities per slice of a
    volume, ``(K, D)`` (K classes, D slices along the volume's last axis, e.g. a slice classifier applied by
    :class:`~common.networks.nets.SliceWise` then a softmax over the K channels). Like MONAI's
    ``ClassificationSaver``, but one row per volume **and slice**, with named columns: ``<name_key>``, ``slice``
    (the index along the last axis of the image as stored), ``p_<class>`` for each class, ``prediction`` (the name
    of the most probable class). The CSV is written atomically when the run completes.

    Args:
        output_dir: where the CSV goes.
        filename: its name.
        class_names: one name per channel of ``pred``.
        name_key: batch key naming each volume (the case); the volume's index if absent.
        pred_key: key of the post-processed engine output.
    """

    def __init__(
        self,
        output_dir: str | Path,
        class_names: Sequence[str],
        filename: str = "slice_probabilities.csv",
        name_key: str = "case",
        pred_key: str = "pred",
    ) -> None:
        if len(class_names) < 2 or len(set(class_names)) != len(class_names):
            raise ValueError(f"class_names: expected at least 2 distinct names, found {list(class_names)}")
        self.path = Path(output_dir) / filename
        self.class_names = [str(c) for c in class_names]
        self.name_key, self.pred_key = name_key, pred_key
        self.rows: list[dict] = []
        self._volumes = 0

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, self._reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._collect)
        engine.add_event_handler(Events.COMPLETED, lambda e: self.write())

    def _reset(self, engine: Engine) -> None:
        self.rows, self._volumes = [], 0

    def _collect(self, engine: Engine) -> None:
        outputs, batches = engine.state.output, engine.state.batch
        if isinstance(outputs, Mapping):  # not decollated: one volume per batch
            outputs, batches = [outputs], [batches]
        for out, batch in zip(outputs, batches):
            name = str(batch.get(self.name_key, self._volumes))
            prob = torch.as_tensor(out[self.pred_key]).detach().float().cpu()
            if prob.ndim != 2 or prob.shape[0] != len(self.class_names):
                raise ValueError(
                    f"{name}: expected {self.pred_key} of shape ({len(self.class_names)}, slices), one probability "
                    f"per class {self.class_names} and slice, found {tuple(prob.shape)}"
                )
            best = prob.argmax(0)
            for k in range(prob.shape[1]):
                row: dict = {self.name_key: name, "slice": k}
                row.update({f"p_{c}": float(prob[i, k]) for i, c in enumerate(self.class_names)})
                row["prediction"] = self.class_names[int(best[k])]
                self.rows.append(row)
            self._volumes += 1

    def write(self) -> Path:
        """Write the rows collected so far; returns the CSV's path."""
        if not self.rows:
            raise ValueError(f"{self.path}: expected at least one classified volume, found none")
        write_csv_rows(self.path, self.rows)
        logger.info("%d slices of %d volumes -> %s", len(self.rows), self._volumes, self.path)
        return self.path
