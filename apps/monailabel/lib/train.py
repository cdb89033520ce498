"""MONAI Label train tasks on a bundle's ``train.json`` (and a stage's configs): the datastore's saved (final) labels as
data, split into training and validation images, the served weights as the start, the run's progress in
``train_stats.json`` beside them, and the new weights swapped in only when the run has finished.

MONAI Label's ``POST /train/{model}`` queues a background task before the app sees the request; the app's endpoint
calls :meth:`BundleTrain.check` first, so that bad params get their 400 and nothing is queued."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import torch
from ignite.engine import Engine, Events
from monai.bundle import ConfigWorkflow
from monai.handlers import from_engine
from monailabel.interfaces.datastore import Datastore, DefaultLabelTag
from monailabel.interfaces.tasks.train import TrainTask
from monailabel.tasks.train.handler import prepare_stats

from common.networks import load_weights
from common.utils.atomic_io import atomic_path

from .bundles import BadRequest, BundleEntry

logger = logging.getLogger(__name__)

__all__ = ["BundleTrain", "TrainRun", "TrainStats", "split_images"]

STATS_FILE = "train_stats.json"
"""The progress of a bundle's latest app run, in the folder of its served weights (MONAI Label's name)."""


def split_images(ids: Sequence[str], every: int = 5) -> tuple[list[str], list[str]]:
    """Split image ids into (training, validation): one in ``every`` validates, at least one when there are two or
    more; a single image is in both (the caller says so). Deterministic and independent of the order of ``ids``: the
    ids are ranked by the SHA-1 of their name and the first ``max(1, n // every)`` validate. Both lists are sorted."""
    if every < 2:
        raise ValueError(f"every: expected >= 2 (one image in every validates), found {every}")
    ids = sorted(set(ids))
    if len(ids) < 2:
        return ids, ids
    ranked = sorted(ids, key=lambda i: hashlib.sha1(i.encode()).hexdigest())
    val = set(ranked[: max(1, len(ids) // every)])
    return [i for i in ids if i not in val], [i for i in ids if i in val]


def _write_json(path: Path, record: Mapping[str, Any]) -> None:
    """Write ``record`` to ``path`` atomically (numpy scalars among the metrics written as floats)."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(record, indent=2, default=float))


class TrainStats:
    """The progress of one run as MONAI Label's ``BasicTrainTask`` writes it (``prepare_stats``: ``epoch``,
    ``total_epochs``, ``start_ts``, ``current_time`` / ``total_time``, ``best_metric``, ``train`` / ``eval`` with the
    engines' ``metrics``, ``key_metric_name``, ``best_metric``, ``best_metric_epoch``; 3D Slicer shows ``epoch`` of
    ``total_epochs`` and ``best_metric``), plus ``status`` (``RUNNING``, ``DONE``, ``ERROR``; ``STOPPED`` when
    ``DELETE /train/`` killed the run, :meth:`BundleTrain.stopped`), ``train_loss`` (the mean loss of each epoch so
    far), ``end_ts`` and ``error``, ``info`` (the stage, the weights, the images) and ``run_dir`` (the run's folder,
    removed when it ends). Written atomically to ``path`` by :meth:`write` (the run's start and end) and after every
    epoch (after its validation) once attached.

    Args:
        path: the JSON file.
        info: what the run is (JSON values), copied into every record.
        total_epochs: the run's epochs (for the records written before the trainer exists).
        run_dir: the run's folder.
    """

    def __init__(self, path: Path, info: Mapping[str, Any], total_epochs: int, run_dir: Path) -> None:
        self.path, self.info, self.total_epochs, self.run_dir = Path(path), dict(info), total_epochs, Path(run_dir)
        self.start_ts = time.time()
        self.trainer: Engine | None = None
        self.evaluator: Engine | None = None
        self.losses: list[float] = []
        self._sum, self._count = 0.0, 0

    def attach(self, trainer: Engine, evaluator: Engine | None) -> None:
        """Record the trainer's loss per iteration and write a record after each epoch (attach after the bundle's
        handlers, so that the epoch's validation has run)."""
        self.trainer, self.evaluator = trainer, evaluator
        trainer.add_event_handler(Events.ITERATION_COMPLETED, self._iteration)
        trainer.add_event_handler(Events.EPOCH_COMPLETED, self._epoch)

    def _iteration(self, engine: Engine) -> None:
        self._sum += float(from_engine(["loss"], first=True)(engine.state.output))
        self._count += 1

    def _epoch(self, engine: Engine) -> None:
        self.losses.append(self._sum / max(self._count, 1))
        self._sum, self._count = 0.0, 0
        self.write("RUNNING")

    def write(self, status: str, error: str | None = None) -> dict[str, Any]:
        """Write the record with ``status`` (and ``error``); returns it."""
        if self.trainer is None:
            stats: dict[str, Any] = {"epoch": 0, "total_epochs": self.total_epochs, "start_ts": int(self.start_ts)}
        else:
            stats = prepare_stats(self.start_ts, self.trainer, self.evaluator)
        stats.update(status=status, train_loss=list(self.losses), info=self.info, run_dir=str(self.run_dir))
        if status != "RUNNING":
            stats["end_ts"] = int(time.time())
        if error is not None:
            stats["error"] = error
        _write_json(self.path, stats)
        return stats


@dataclass(frozen=True)
class TrainRun:
    """A checked train request: the epochs, the stage, and the datastore items (``{"id", "image", "label"}``) to
    train and to validate on; ``note`` says when they are the same image."""

    epochs: int
    stage: str
    training: list[dict]
    validation: list[dict]
    note: str | None


class BundleTrain(TrainTask):
    """Fine-tune the served weights of a bundle on the datastore's labels with its ``train.json`` and a stage's configs.

    Data: the datastore images with a final label that the entry accepts (:meth:`BundleEntry.accepts`), split by
    :func:`split_images` (one in five validates; a single image trains and validates, which the stats say). The run
    writes into a fresh folder beside the served weights (``ckpt_path``, ``resume_path`` and ``output_dir``
    overridden: the bundle's :class:`~common.handlers.AtomicCheckpointSaver` writes its best-metric weights there; the
    files a stage reads, such as DeepIGeoS' served P-Net + CRF-Net(f) that labels R-Net's samples, stay the served
    ones); only after the run has finished is that file moved over the served one with ``os.replace`` (with its
    ``.json``). A run that fails leaves the served weights as they were; infer tasks reload the weights when the file
    changes. The progress is in ``train_stats.json`` in the served weights' folder (:class:`TrainStats`), which
    :meth:`stats` returns (MONAI Label's ``/info/`` ``train_stats``, the 3D Slicer module's progress and accuracy).

    Request params: ``max_epochs`` (int >= 1, default 1); ``stage`` (one of the entry's ``train_stages``, default
    the first; offered in :meth:`config` when there are several).

    Args:
        entry: the bundle's registry entry (``train_items`` maps datastore items to the bundle's data).
        root: the bundle folder.
        extra_configs: config files merged last (the settings of the served weights).
        device: where training runs.
    """

    def __init__(self, entry: BundleEntry, root: Path, extra_configs: Sequence[str], device: torch.device) -> None:
        if entry.train_items is None or not entry.train_stages:
            raise ValueError(f"{entry.name}: expected an entry with train_items and train_stages, found none")
        stages = ", ".join(f"{s}: {' + '.join(['train.json', *c])}" for s, c in entry.train_stages.items())
        super().__init__(f"{entry.name}: fine-tune the served weights on the datastore's final labels ({stages})")
        self.entry, self.root, self.device = entry, Path(root), device
        self.extra_configs = [str(c) for c in extra_configs]
        self._lock = threading.Lock()

    def config(self) -> dict[str, Any]:
        """The request params a client offers: ``max_epochs``; ``stage`` (the choices, default first) when the entry
        has several."""
        stages = list(self.entry.train_stages)
        return {"max_epochs": 1, **({"stage": stages} if len(stages) > 1 else {})}

    def _workflow(self, stage: str, **override: Any) -> ConfigWorkflow:
        configs = ["train.json", *self.entry.train_stages[stage]]
        return ConfigWorkflow(
            config_file=[str(self.root / "configs" / c) for c in configs] + self.extra_configs,
            meta_file=str(self.root / "configs" / "metadata.json"),
            workflow_type="train",
            bundle_root=str(self.root),
            device=self.device,
            **{**self.entry.overrides, **override},
        )

    def served(self, stage: str) -> Path:
        """The served weights file the stage fine-tunes (its ``ckpt_path``)."""
        return Path(self._workflow(stage).parser.get_parsed_content("ckpt_path"))

    @cached_property
    def stats_path(self) -> Path:
        """``train_stats.json`` in the folder of the default stage's served weights."""
        return self.served(next(iter(self.entry.train_stages))).parent / STATS_FILE

    def stats(self) -> dict[str, Any]:
        """The latest run's :class:`TrainStats` record (``{}`` before the first run)."""
        return json.loads(self.stats_path.read_text()) if self.stats_path.is_file() else {}

    def stopped(self) -> None:
        """Record that the latest run was stopped (MONAI Label's ``DELETE /train/`` killed its process, which could
        not write its end): a record still ``RUNNING`` becomes ``STOPPED`` (MONAI Label's status of a stopped task)
        with its ``end_ts``, and the run's folder is removed; the served weights stay as they were."""
        stats = self.stats()
        if stats.get("status") != "RUNNING":
            return
        if stats.get("run_dir"):  # records written before the run's folder was recorded have none
            shutil.rmtree(stats["run_dir"], ignore_errors=True)
        _write_json(self.stats_path, {**stats, "status": "STOPPED", "end_ts": int(time.time())})

    def check_params(self, request: Mapping[str, Any], names: Mapping[str, str] | None = None) -> tuple[int, str]:
        """The request's ``max_epochs`` and ``stage`` checked -> (epochs, stage); :class:`BadRequest` naming the field
        (``names``: the name of a param in the client's request, default ``params.<param>``), what was expected and
        what was found otherwise."""
        names = names or {}
        epochs = request.get("max_epochs", 1)
        if not isinstance(epochs, int) or isinstance(epochs, bool) or epochs < 1:
            name = names.get("max_epochs", "params.max_epochs")
            raise BadRequest(f"{name}: expected an integer >= 1, found {epochs!r}")
        stage = request.get("stage", next(iter(self.entry.train_stages)))
        if not isinstance(stage, str) or stage not in self.entry.train_stages:
            name = names.get("stage", "params.stage")
            raise BadRequest(f"{name}: expected one of {list(self.entry.train_stages)}, found {stage!r}")
        return epochs, stage

    def check(self, request: Mapping[str, Any], datastore: Datastore) -> TrainRun:
        """The request's params (:meth:`check_params`) and the datastore images checked -> the run; :class:`BadRequest`
        naming what was expected and found otherwise (bad ``max_epochs`` or ``stage``, no labelled image of this
        bundle)."""
        epochs, stage = self.check_params(request)
        items = {}
        for image_id in datastore.get_labeled_images():
            image = datastore.get_image_uri(image_id)
            if self.entry.accepts(image_id, image):  # the datastore holds every bundle's images
                items[image_id] = {
                    "id": image_id,
                    "image": image,
                    "label": datastore.get_label_uri(image_id, DefaultLabelTag.FINAL),
                }
        if not items:
            raise BadRequest(
                f"{self.entry.name}: expected images with a final label in the datastore whose id starts with "
                f"{self.entry.train_prefix!r} and that have {self.entry.channels} channel(s), found none"
            )
        train, val = split_images(list(items))
        note = None
        if len(items) == 1:
            note = f"one labelled image ({train[0]}): it trains and validates, so the metric is not on unseen data"
        return TrainRun(epochs, stage, [items[i] for i in train], [items[i] for i in val], note)

    def __call__(self, request: dict[str, Any], datastore: Datastore) -> dict[str, Any]:
        """Run the stage for ``max_epochs`` on the training images, validating on the others -> the final stats
        record (``status`` ``DONE``)."""
        run = self.check(request, datastore)
        with self._lock:
            served = self.served(run.stage)
            info = {
                "stage": run.stage,
                "weights": str(served),
                "images": {
                    "training": [i["id"] for i in run.training],
                    "validation": [i["id"] for i in run.validation],
                },
                "note": run.note,
            }
            staging = Path(tempfile.mkdtemp(prefix=".train-", dir=served.parent))
            stats = TrainStats(self.stats_path, info, run.epochs, staging)
            try:
                stats.write("RUNNING")
                self._train(run, served, staging, stats)
            except BaseException as e:
                stats.write("ERROR", f"{type(e).__name__}: {e}")
                raise
            finally:
                shutil.rmtree(staging, ignore_errors=True)
            record = stats.write("DONE")
        logger.info("%s: trained %s for %d epoch(s) -> %s", self.entry.name, run.stage, run.epochs, served)
        return record

    def _train(self, run: TrainRun, served: Path, staging: Path, stats: TrainStats) -> None:
        """Train into ``staging``, then move the new weights over ``served``."""
        fine_tune = served.is_file()  # a first run starts as the bundle's stage does
        wf = self._workflow(
            run.stage,
            ckpt_path=str(staging / served.name),
            resume_path=str(staging / "checkpoint_last.pt"),
            output_dir=str(staging),
            epochs=run.epochs,
            val_interval=1,
            **{
                "train#dataset#data": self.entry.train_items(run.training, True),
                "validate#dataset#data": self.entry.train_items(run.validation, False),
            },
            **({"init_weights": "$None"} if fine_tune else {}),  # the served weights replace what it would load
        )
        wf.initialize()
        if fine_tune:
            load_weights(wf.parser.get_parsed_content("network"), served, self.device)
        stats.attach(wf.parser.get_parsed_content("train#trainer"), wf.parser.get_parsed_content("validate#evaluator"))
        wf.run()
        wf.finalize()
        new = staging / served.name
        if not new.is_file():
            raise RuntimeError(f"{self.entry.name}: expected the run to write {new}, found no file")
        os.replace(new, served)  # the weights first: the served .json may lag, never lead
        info = new.with_suffix(".json")
        if info.is_file():
            os.replace(info, served.with_suffix(".json"))
