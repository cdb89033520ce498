"""MONAI Label train task on a bundle's ``train.json``: the datastore's saved (final) labels as its data, the served
weights as the start, and the new weights swapped in only when the run has finished."""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from monai.bundle import ConfigWorkflow
from monailabel.interfaces.datastore import Datastore
from monailabel.interfaces.tasks.train import TrainTask

from common.networks import load_weights

from .bundles import BadRequest, BundleEntry

logger = logging.getLogger(__name__)

__all__ = ["BundleTrain"]


class BundleTrain(TrainTask):
    """Fine-tune the served weights of a bundle on the datastore's labels with its ``train.json``.

    The run writes into a fresh folder beside the served weights (``ckpt_dir`` and ``output_dir`` overridden, so the
    bundle's :class:`~common.handlers.AtomicCheckpointSaver` writes its best-metric ``model.pt`` there); only after
    the run has finished is that file moved over the served one with ``os.replace`` (with its ``model.json``). A run
    that fails leaves the served weights as they were; infer tasks reload the weights when the file changes.

    Request params: ``max_epochs`` (int, default 1).

    Args:
        entry: the bundle's registry entry (``train_items`` maps datastore items to the bundle's data).
        root: the bundle folder.
        extra_configs: config files merged after ``train.json`` (the settings of the served weights).
        device: where training runs.
    """

    def __init__(self, entry: BundleEntry, root: Path, extra_configs: Sequence[str], device: torch.device) -> None:
        super().__init__(f"{entry.name}: fine-tune on the datastore's final labels ({root}/configs/train.json)")
        self.entry, self.root, self.device = entry, Path(root), device
        self.configs = [str(self.root / "configs" / "train.json"), *map(str, extra_configs)]
        self._lock = threading.Lock()

    def config(self) -> dict[str, Any]:
        return {"max_epochs": 1}

    def _workflow(self, **override: Any) -> ConfigWorkflow:
        return ConfigWorkflow(
            config_file=self.configs,
            meta_file=str(self.root / "configs" / "metadata.json"),
            workflow_type="train",
            bundle_root=str(self.root),
            device=self.device,
            **{**self.entry.overrides, **override},
        )

    def __call__(self, request: dict[str, Any], datastore: Datastore) -> dict[str, Any]:
        """Run ``train.json`` for ``max_epochs`` on every labelled image -> ``{"weights", "epochs", "images"}``."""
        epochs = request.get("max_epochs", 1)
        if not isinstance(epochs, int) or isinstance(epochs, bool) or epochs < 1:
            raise BadRequest(f"params.max_epochs: expected an integer >= 1, found {epochs!r}")
        items = [
            i for i in datastore.datalist() if self.entry.accepts(i["image"])
        ]  # the datastore holds every bundle's
        if not items:
            raise BadRequest(f"{self.entry.name}: expected images with a final label in the datastore, found none")
        train, val = self.entry.train_items(items)
        with self._lock:
            served = Path(self._workflow().parser.get_parsed_content("ckpt_path"))
            staging = Path(tempfile.mkdtemp(prefix=".train-", dir=served.parent))
            try:
                wf = self._workflow(
                    ckpt_dir=str(staging),
                    output_dir=str(staging),
                    epochs=epochs,
                    val_interval=1,
                    **{"train#dataset#data": train, "validate#dataset#data": val},
                )
                wf.initialize()
                if served.is_file():  # fine-tune the served network (a first run starts from scratch)
                    load_weights(wf.parser.get_parsed_content("network"), served, self.device)
                wf.run()
                wf.finalize()
                new = staging / served.name
                if not new.is_file():
                    raise RuntimeError(f"{self.entry.name}: expected the run to write {new}, found no file")
                os.replace(new, served)  # the weights first: the served model.json may lag, never lead
                info = new.with_suffix(".json")
                if info.is_file():
                    os.replace(info, served.with_suffix(".json"))
            finally:
                shutil.rmtree(staging, ignore_errors=True)
        logger.info("%s: trained %d epoch(s) on %d images -> %s", self.entry.name, epochs, len(items), served)
        return {"weights": str(served), "epochs": epochs, "images": len(items)}
