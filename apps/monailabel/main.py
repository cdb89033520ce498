"""The project's MONAI Label app: every bundle of ``bundles/`` that has trained weights, served by its own configs.

``monailabel start_server --app apps/monailabel --studies <folder> [--conf key value ...]``

Conf keys:
    ``bundles_dir``: the folder of bundles (default: ``bundles/`` of this repository).
    ``bundles``: comma-separated names to serve (default: every entry of ``lib.BUNDLES``).
    ``extra_configs``: JSON ``{"<bundle>": ["<config file>", ...]}`` merged on each of the bundle's configs, e.g. the
        settings the served weights were trained with (``{"igs_acdc": ["bundles/igs_acdc/configs/demo.json"]}``).
    ``device``: ``cpu`` / ``cuda`` (default: cuda when available).
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from fastapi import HTTPException
from lib import BUNDLES, BadRequest, BundleModel, BundleSegmentation, BundleTrain, DeepIGeoSRefinement
from monailabel.interfaces.app import MONAILabelApp
from monailabel.interfaces.tasks.infer_v2 import InferTask
from monailabel.interfaces.tasks.train import TrainTask

logger = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[2]


class BundlesApp(MONAILabelApp):
    """Infer tasks ``<bundle>`` (automatic segmentation) for every served bundle, ``<bundle>_refine`` (DeepIGeoS
    clicks) where the entry has ``refine``, train tasks ``<bundle>`` where it has ``train_items``. A bundle without
    its weights file is skipped with a log line that names the file (and the command that writes it)."""

    def __init__(self, app_dir: str, studies: str, conf: dict[str, str]) -> None:
        self.bundles_dir = Path(conf.get("bundles_dir", REPO / "bundles")).resolve()
        names = [n for n in conf.get("bundles", ",".join(BUNDLES)).split(",") if n]
        unknown = sorted(set(names) - set(BUNDLES))
        if unknown:
            raise ValueError(f"conf bundles: expected names among {sorted(BUNDLES)}, found {unknown}")
        extra = json.loads(conf.get("extra_configs", "{}"))
        self.device = torch.device(conf.get("device", "cuda" if torch.cuda.is_available() else "cpu"))
        self.models = {n: BundleModel(BUNDLES[n], self.bundles_dir / n, extra.get(n, []), self.device) for n in names}
        self.extra = extra
        super().__init__(
            app_dir=app_dir,
            studies=studies,
            conf=conf,
            name="MONAI bundles for medical-image research methods",
            description="Automatic segmentation by every trained bundle, DeepIGeoS click refinement, fine-tuning",
            version="0.1.0",
        )

    def init_infers(self) -> dict[str, InferTask]:
        infers: dict[str, InferTask] = {}
        for name, model in self.models.items():
            weights = model.weights()
            if not weights.is_file():
                logger.warning(
                    "skipping bundle %s: no weights at %s (train it first: python -m monai.bundle run training "
                    "--config_file %s/configs/train.json)",
                    name,
                    weights,
                    model.root,
                )
                continue
            infers[name] = BundleSegmentation(model)
            if model.entry.refine:
                refine = DeepIGeoSRefinement(model, infers[name])
                if refine.is_valid():
                    infers[f"{name}_refine"] = refine
                else:
                    logger.warning("skipping %s_refine: no weights at %s", name, refine.path[0])
        logger.info("serving infer tasks: %s", sorted(infers))
        return infers

    def init_trainers(self) -> dict[str, TrainTask]:
        return {
            name: BundleTrain(model.entry, model.root, self.extra.get(name, []), self.device)
            for name, model in self.models.items()
            if model.entry.train_items is not None
        }

    def _refuse(self, request: dict[str, Any], tasks: dict[str, Any], kind: str) -> None:
        """404 for an unknown model or an image id the datastore does not hold, naming what there is."""
        model = request.get("model")
        if model not in tasks:
            raise HTTPException(404, f"{kind} model: expected one of {sorted(tasks)}, found {model!r}")

    def infer(self, request: dict[str, Any], datastore: Any = None) -> dict[str, Any]:
        """MONAI Label's infer with clear 4xx answers: unknown model or image 404, bad params 400."""
        self._refuse(request, self._infers, "infer")
        image = request.get("image")
        store = datastore or self.datastore()
        uploaded = isinstance(image, str) and os.path.isfile(image) and image.startswith(tempfile.gettempdir())
        if not isinstance(image, str) or not (uploaded or store.get_image_uri(image)):
            raise HTTPException(404, f"image: expected an image id of the datastore, found {image!r}")
        try:
            return super().infer(request, datastore)
        except BadRequest as e:
            raise HTTPException(400, str(e)) from e

    def train(self, request: dict[str, Any]) -> dict[str, Any]:
        """MONAI Label's train with 4xx answers for an unknown model (404) or bad params / no labels (400)."""
        self._refuse(request, self._trainers, "train")
        try:
            return super().train(request)
        except BadRequest as e:
            raise HTTPException(400, str(e)) from e
