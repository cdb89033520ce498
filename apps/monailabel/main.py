"""The project's MONAI Label app: every bundle of ``bundles/`` that has trained weights, served by its own configs.

``monailabel start_server --app apps/monailabel --studies <folder> [--conf key value ...]``

Conf keys:
    ``bundles_dir``: the folder of bundles (default: ``bundles/`` of this repository).
    ``bundles``: comma-separated names to serve (default: every entry of ``lib.BUNDLES``).
    ``extra_configs``: JSON ``{"<bundle>": ["<config file>", ...]}`` merged on each of the bundle's configs, e.g. the
        settings the served weights were trained with (``{"igs_acdc": ["bundles/igs_acdc/configs/demo.json"]}``).
    ``device``: ``cpu`` / ``cuda`` (default: cuda when available).
    ``refine_from``: what a DeepIGeoS refinement refines by default: ``initial`` (the start label with every click
        so far, the bundle's evaluation) or ``previous`` (the latest label with the new clicks); default ``initial``.
    ``refine_cache_entries``, ``refine_cache_bytes``: the bounds of the refinement cache (each user's label and clicks
        of each image, the loaded images, and the automatic labels of bundles with a refinement, which the refinement
        starts from; least recently used evicted); default 8 entries, 2 GiB.

Served images: datastore ids, the image of a live session (``session_id``) and files uploaded with the request;
every other path is refused (404). In the server, ``POST /infer/{model}``, ``POST /train/{model}`` and ``POST
/train/`` run off the event loop and train requests are checked before anything is queued; ``DELETE /train/`` marks
the stopped run's stats (:mod:`lib.endpoints`).
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from fastapi import HTTPException
from lib.bundles import BUNDLES, BadRequest, BundleModel
from lib.endpoints import serve_off_event_loop
from lib.infer import REFINE_FROM, BundleSegmentation, DeepIGeoSRefinement
from lib.state import LRUCache
from lib.tasks import task_infers
from lib.train import BundleTrain
from monai.transforms import LoadImage
from monailabel.interfaces.app import MONAILabelApp
from monailabel.interfaces.datastore import Datastore
from monailabel.interfaces.tasks.infer_v2 import InferTask
from monailabel.interfaces.tasks.strategy import Strategy
from monailabel.interfaces.tasks.train import TrainTask
from monailabel.tasks.activelearning.first import First
from monailabel.tasks.activelearning.random import Random

logger = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[2]


def _conf_int(conf: dict[str, str], key: str, default: int) -> int:
    """The integer >= 1 of app conf ``key`` (``default`` when absent); ValueError naming the key otherwise."""
    value = conf.get(key, str(default))
    if not value.isdigit() or int(value) < 1:
        raise ValueError(f"conf {key}: expected an integer >= 1, found {value!r}")
    return int(value)


def _read_error(path: str) -> str | None:
    """Why MONAI cannot load the image file at ``path`` (the start of the error message), or None if it can."""
    try:
        LoadImage(image_only=True)(path)
    except Exception as e:  # whatever the reader raises
        return str(e)[:300]
    return None


def _missing_file(error: BaseException) -> FileNotFoundError | None:
    """The ``FileNotFoundError`` behind ``error`` (MONAI wraps a transform's error in ``RuntimeError``), if any."""
    while error is not None:
        if isinstance(error, FileNotFoundError):
            return error
        error = error.__cause__ or error.__context__
    return None


class BundlesApp(MONAILabelApp):
    """Infer tasks ``<bundle>`` (automatic segmentation) for every served bundle, ``<bundle>_refine`` (DeepIGeoS
    clicks) where the entry has ``refine``, train tasks ``<bundle>`` where it has ``train_items``, next-sample
    strategies ``random`` and ``first``. A bundle without its weights file is skipped with a log line that names the
    file (and the command that writes it)."""

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
        self.refine_from = conf.get("refine_from", "initial")
        if self.refine_from not in REFINE_FROM:
            raise ValueError(f"conf refine_from: expected one of {list(REFINE_FROM)}, found {self.refine_from!r}")
        self.refine_cache = LRUCache(
            _conf_int(conf, "refine_cache_entries", 8), _conf_int(conf, "refine_cache_bytes", 2 * 1024**3)
        )
        super().__init__(
            app_dir=app_dir,
            studies=studies,
            conf=conf,
            name="MONAI bundles for medical-image research methods",
            description="Automatic segmentation by every trained bundle, DeepIGeoS click refinement, fine-tuning",
            version="0.1.0",
        )
        server = sys.modules.get("monailabel.app")  # MONAI Label's FastAPI app, when this runs in its server
        if server is not None:
            serve_off_event_loop(server.app)

    def init_infers(self) -> dict[str, InferTask]:
        infers: dict[str, InferTask] = {}
        for name, model in self.models.items():
            weights = model.weights()
            if not weights.is_file():
                logger.warning(
                    "skipping bundle %s: no weights at %s (train it first: %s)", name, weights, model.train_commands()
                )
                continue
            infers[name] = BundleSegmentation(model, self.refine_cache if model.entry.refine else None)
            infers.update(task_infers(model))
            if model.entry.refine:
                refine = DeepIGeoSRefinement(model, infers[name], self.refine_cache, self.refine_from)
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

    def init_strategies(self) -> dict[str, Strategy]:
        """MONAI Label's ``random`` and ``first`` (the first image without a final label) next-sample strategies."""
        return {"random": Random(), "first": First()}

    def _refuse(self, request: dict[str, Any], tasks: dict[str, Any], kind: str) -> None:
        """404 for an unknown model, naming the models there are."""
        model = request.get("model")
        if model not in tasks:
            raise HTTPException(404, f"{kind} model: expected one of {sorted(tasks)}, found {model!r}")

    def _image_source(self, request: dict[str, Any], uploads: Sequence[str], store: Datastore) -> dict[str, str]:
        """Which image the request names -> ``{"kind": "session" | "upload" | "datastore", "id": ...}``: the image of
        a live session (the request's ``session``, checked against the server's sessions), a file written for this
        request's upload (one of ``uploads``), or a datastore id; HTTPException 400 / 404 naming what is expected
        otherwise."""
        image = request.get("image")
        if not isinstance(image, str) or not image:
            raise HTTPException(400, f"image: expected an image id of the datastore (a string), found {image!r}")
        session = request.get("session")
        if session is not None:
            name, sessions = session.get("name") if isinstance(session, dict) else None, self.sessions()
            live = sessions.get_session(name, update_ts=False) if sessions and isinstance(name, str) else None
            if live is None or live.image != image:
                raise HTTPException(404, f"session: expected a live session of this server, found {session!r:.300}")
            return {"kind": "session", "id": name}
        if image in uploads and os.path.isfile(image):
            return {"kind": "upload", "id": image}
        if store.get_image_uri(image):
            return {"kind": "datastore", "id": image}
        raise HTTPException(
            404,
            "image: expected an image id of the datastore, a file uploaded with the request or a live session "
            f"(session_id), found {image!r}",
        )

    def infer(self, request: dict[str, Any], datastore: Any = None, uploads: Sequence[str] = ()) -> dict[str, Any]:
        """MONAI Label's infer on a datastore image, a session's image or an upload, with clear 4xx answers: unknown
        model or image 404, bad params 400, a file the request needs that the server does not have (a learned k-space
        pattern of another acceleration) 404.

        Args:
            request: MONAI Label's request (``model``, ``image``, the params; ``session`` from its session lookup).
            datastore: as MONAI Label's (None: the app's).
            uploads: the files the endpoint wrote for this request's uploads (:func:`lib.endpoints.infer`); only
                these paths are served besides datastore and session images.
        """
        self._refuse(request, self._infers, "infer")
        source = self._image_source(request, uploads, datastore or self.datastore())
        try:
            return super().infer({**request, "image_source": source}, datastore)
        except BadRequest as e:
            raise HTTPException(400, str(e)) from e
        except HTTPException:
            raise
        except Exception as e:
            missing = _missing_file(e)  # a file the request asked for is missing (perhaps wrapped by MONAI)
            if missing is not None:
                raise HTTPException(404, f"{request['model']}: {missing}") from e
            unreadable = _read_error(request["image"]) if source["kind"] == "upload" else None
            if unreadable is not None:
                raise HTTPException(
                    400, f"file: expected an image file MONAI reads, found one it cannot read ({unreadable})"
                ) from e
            raise

    def check_train(self, model: str, params: dict[str, Any]) -> None:
        """404 for an unknown train model, 400 for bad params or no labelled image of the bundle
        (:meth:`lib.train.BundleTrain.check`); the train endpoint (:func:`lib.endpoints.train_model`) calls it before
        MONAI Label queues a task."""
        self._refuse({"model": model}, self._trainers, "train")
        try:
            self._trainers[model].check(params, self.datastore())
        except BadRequest as e:
            raise HTTPException(400, str(e)) from e

    def check_train_all(self, params: Mapping[str, Any]) -> dict[str, str]:
        """Check ``POST /train/`` (every train model; MONAI Label gives each model ``{**params[<model>], **params}``)
        before anything is queued -> ``{model: why it cannot run}`` for the models without a labelled image of their
        bundle (not queued). HTTPException 400 naming the field for a ``model`` key, a model's params that are not a
        JSON object, bad ``max_epochs`` / ``stage`` (at the top or under the model), or when no model can run."""
        if "model" in params:
            raise HTTPException(
                400,
                f"params.model: expected none in POST /train/, which trains every model (POST /train/<model> trains "
                f"one), found {params['model']!r:.100}",
            )
        skipped = {}
        for model, trainer in self._trainers.items():
            own = params.get(model) or {}
            if not isinstance(own, dict):
                raise HTTPException(
                    400, f"params.{model}: expected a JSON object of its train params, found {own!r:.200}"
                )
            names = {k: f"params.{k}" if k in params else f"params.{model}.{k}" for k in ("max_epochs", "stage")}
            try:
                trainer.check_params({**own, **params}, names)
            except BadRequest as e:
                raise HTTPException(400, f"{model}: {e}") from e
            try:
                trainer.check({**own, **params}, self.datastore())
            except BadRequest as e:
                skipped[model] = str(e)
        if len(skipped) == len(self._trainers):
            found = "; ".join(f"{m}: {why}" for m, why in skipped.items()) or "no train model"
            raise HTTPException(400, f"POST /train/: expected a train model with labelled images, found none ({found})")
        return skipped

    def train_stopped(self, task: Mapping[str, Any]) -> None:
        """MONAI Label's ``DELETE /train/`` has killed ``task`` (its task record): the train stats of its model say
        ``STOPPED`` (:meth:`lib.train.BundleTrain.stopped`)."""
        trainer = self._trainers.get(task.get("request", {}).get("model"))
        if trainer is not None:
            trainer.stopped()

    def info(self) -> dict[str, Any]:
        """MONAI Label's app info, with ``train_stats`` ordered so that the model being trained, else the one trained
        last (the latest ``start_ts``), comes first: 3D Slicer's module shows the first model's stats only."""
        meta = super().info()
        stats = meta["train_stats"]
        order = sorted(
            stats, key=lambda m: (stats[m].get("status") == "RUNNING", stats[m].get("start_ts", 0)), reverse=True
        )
        meta["train_stats"] = {m: stats[m] for m in order}
        return meta

    def train(self, request: dict[str, Any]) -> dict[str, Any]:
        """MONAI Label's train with 4xx answers for an unknown model (404) or bad params / no labels (400: the train
        task checks them itself, :meth:`lib.train.BundleTrain.check`, so they are not checked twice here)."""
        self._refuse(request, self._trainers, "train")
        try:
            return super().train(request)
        except BadRequest as e:
            raise HTTPException(400, str(e)) from e
