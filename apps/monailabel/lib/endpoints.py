"""MONAI Label's inference and training endpoints served off the server's event loop.

MONAI Label 0.8.5 declares ``POST /infer/{model}`` and ``POST /train/{model}`` as ``async def`` functions that call
the synchronous inference / training: while one runs, the event loop answers nothing else (``GET /info/`` waited for
a whole automatic segmentation, ``GET /train/`` for a whole refinement). :func:`serve_off_event_loop` replaces these
routes, ``POST /train/`` (every model) and ``DELETE /train/`` by plain functions with the same parameters,
authorisation dependency and responses, which FastAPI runs in its thread pool. The inference endpoint also answers
malformed requests with a 4xx naming what it expected, and tells the app which files it wrote for the request's
uploads (:meth:`main.BundlesApp.infer` serves those, datastore images and the images of live sessions, and nothing
else); the train endpoints have the app check the params before anything is queued; the stop endpoint has the app
mark the killed run's stats."""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import tempfile
from collections.abc import Callable
from typing import Any

import monailabel.endpoints.infer as infer_endpoints
import monailabel.endpoints.train as train_endpoints
from fastapi import BackgroundTasks, Depends, FastAPI, File, Form, HTTPException, UploadFile
from fastapi.routing import APIRoute, APIRouter
from monailabel.config import settings
from monailabel.datastore.dicom import DICOMWebDatastore
from monailabel.datastore.utils.convert import binary_to_image, nifti_to_dicom_seg
from monailabel.endpoints.infer import ResultType, send_response
from monailabel.endpoints.user.auth import RBAC, User
from monailabel.interfaces.utils.app import app_instance
from monailabel.utils.async_tasks.task import AsyncTask
from monailabel.utils.async_tasks.utils import processes
from monailabel.utils.others.generic import remove_file

__all__ = ["infer", "serve_off_event_loop", "stop_training", "train_all", "train_model"]


def _save_upload(upload: UploadFile, background_tasks: BackgroundTasks) -> str:
    """Copy an uploaded file to a new temporary file (removed after the response) -> its path, with the upload's
    suffixes (``.nii.gz`` when it has no name), as MONAI Label does."""
    suffix = "".join(pathlib.Path(upload.filename).suffixes) if upload.filename else ".nii.gz"
    fd, path = tempfile.mkstemp(suffix=suffix)
    with os.fdopen(fd, "wb") as out:
        shutil.copyfileobj(upload.file, out)
    background_tasks.add_task(remove_file, path)
    return path


def infer(
    background_tasks: BackgroundTasks,
    model: str,
    image: str = "",
    session_id: str = "",
    params: str = Form("{}"),
    file: UploadFile = File(None),
    label: UploadFile = File(None),
    output: ResultType | None = None,
    user: User = Depends(RBAC(settings.MONAI_LABEL_AUTH_ROLE_USER)),
) -> Any:
    """``POST /infer/{model}``: MONAI Label's ``run_inference`` (same parameters, request and response), with these
    differences. 400 for ``params`` that are not a JSON object and for a request with no image (no ``image`` id, no
    ``file``, no ``session_id``); 404 for a ``session_id`` that is not a live session (MONAI Label went on with the
    ``image`` id); 400 for ``output=dicom_seg`` without a DICOMweb datastore or without ``label_info`` (before the
    inference runs). ``params`` cannot set ``label`` or ``session``: only the uploaded ``label`` file and the
    looked-up session do. The paths written for ``file`` and ``label`` are passed to the app as ``uploads``, and
    removed after the answer, an error answer included."""
    try:
        p = json.loads(params) if params else {}
    except json.JSONDecodeError as e:
        raise HTTPException(400, f"params: expected a JSON object, found {params[:200]!r} ({e})") from e
    if not isinstance(p, dict):
        raise HTTPException(400, f"params: expected a JSON object, found {params[:200]!r}")
    instance = app_instance()
    if output == "dicom_seg":
        if not isinstance(instance.datastore(), DICOMWebDatastore):
            raise HTTPException(400, "output: expected dicom_seg with a DICOMweb datastore only, found a local one")
        if p.get("label_info") is None:
            raise HTTPException(400, "params.label_info: expected the label info of the DICOM SEG, found none")
    request: dict[str, Any] = {"model": model, "image": image}
    request.update(instance.info().get("config", {}).get("infer", {}))
    request.update(p)
    request.pop("label", None)
    request.pop("session", None)
    uploads: list[str] = []
    try:  # an error answer runs no background task: its uploads are removed here
        if file:
            request["image"] = _save_upload(file, background_tasks)
            uploads.append(request["image"])
        if label:
            label_file = _save_upload(label, background_tasks)
            if label_file.endswith(".bin"):  # OHIF's scribbles: raw bytes on the datastore image's grid
                label_file = binary_to_image(instance.datastore().get_image_uri(image), label_file)
                background_tasks.add_task(remove_file, label_file)
            request["label"] = label_file
            uploads.append(label_file)
        if session_id:
            sessions = instance.sessions()
            if sessions is None:
                raise HTTPException(
                    406, "session_id: expected the session feature enabled (MONAI_LABEL_SESSIONS), found off"
                )
            session = sessions.get_session(session_id)
            if not session:
                raise HTTPException(
                    404,
                    f"session_id: expected a live session of this server, found {session_id!r} (expired or unknown)",
                )
            request["image"] = session.image
            request["session"] = session.to_json()
        if not request["image"]:
            raise HTTPException(
                400,
                "image: expected an image id (image=), an uploaded image (file) or a session (session_id), found none",
            )
        result = instance.infer(request, uploads=uploads)
    except BaseException:
        for path in uploads:
            remove_file(path)
        raise
    if output == "dicom_seg":
        image_uri = instance.datastore().get_image_uri(image)
        image_path = next(image_uri.replace(s, "") for s in (".nii", ".nii.gz", ".nrrd") if image_uri.endswith(s))
        res_img = result.get("file") if result.get("file") else result.get("label")
        result["dicom_seg"] = nifti_to_dicom_seg(image_path, res_img, p.get("label_info"), use_itk=True)
    return send_response(instance.datastore(), result, output, background_tasks)


def train_model(
    model: str,
    params: dict | None = None,
    run_sync: bool | None = False,
    enqueue: bool | None = False,
    user: User = Depends(RBAC(settings.MONAI_LABEL_AUTH_ROLE_ADMIN)),
) -> Any:
    """``POST /train/{model}``: MONAI Label's ``run_model`` (a training run in the server with ``run_sync``), after
    the app has checked the model and the params (``BundlesApp.check_train``: 404 / 400 before a task is queued)."""
    app_instance().check_train(model, params or {})
    return train_endpoints.run_model(model, params, run_sync, enqueue)


def train_all(
    params: dict | None = None,
    run_sync: bool | None = False,
    user: User = Depends(RBAC(settings.MONAI_LABEL_AUTH_ROLE_ADMIN)),
) -> Any:
    """``POST /train/``: MONAI Label's ``run`` (a train task per model, each with ``{**params[<model>], **params}``;
    ``{model: {"result", "detail"}}``), after the app has checked every model's params (``BundlesApp.check_train_all``:
    400 naming the field before anything is queued); a model without a labelled image is not queued (``result`` None,
    ``detail`` saying why)."""
    instance = app_instance()
    params = params or {}
    skipped = instance.check_train_all(params)
    result = {}
    for model in instance.info()["trainers"]:
        if model in skipped:
            result[model] = {"result": None, "detail": skipped[model]}
            continue
        request = {"model": model, **(params.get(model) or {})}
        res, detail = AsyncTask.run("train", request=request, params=params, force_sync=run_sync, enqueue=True)
        result[model] = {"result": res, "detail": detail}
    return result


def stop_training(user: User = Depends(RBAC(settings.MONAI_LABEL_AUTH_ROLE_ADMIN))) -> Any:
    """``DELETE /train/``: MONAI Label's ``stop`` (kills the running train task's process; its task record, now
    ``STOPPED``, or None when none runs), then, once the process has ended, the app marks that model's train stats
    ``STOPPED`` (``BundlesApp.train_stopped``): the killed process could not."""
    running = next(iter(processes("train").values()), None)
    task = train_endpoints.stop()
    if task is not None:
        if running is not None:
            running.wait(timeout=60)
        app_instance().train_stopped(task)
    return task


def _replace(router: APIRouter, path: str, method: str, endpoint: Callable) -> bool:
    """Replace the ``method`` route of ``path`` in ``router`` by ``endpoint``, declared as the original (summary,
    name, tags, responses; the router adds its prefix, tags and responses as it did; the OpenAPI description is the
    endpoint's docstring) -> whether ``router`` has that route (now served by ``endpoint``)."""
    for route in list(router.routes):
        if isinstance(route, APIRoute) and route.path == path and method in route.methods:
            if route.endpoint is not endpoint:
                router.routes.remove(route)
                router.add_api_route(
                    path[len(router.prefix) :],
                    endpoint,
                    methods=[method],
                    summary=route.summary,
                    name=route.name,
                    tags=[t for t in route.tags if t not in router.tags],
                    responses=route.responses,
                    response_model=None,
                    include_in_schema=route.include_in_schema,
                    deprecated=route.deprecated,
                )
            return True
    return False


def serve_off_event_loop(app: FastAPI) -> None:
    """Serve ``POST /infer/{model}`` by :func:`infer`, ``POST /train/{model}`` by :func:`train_model`, ``POST /train/``
    by :func:`train_all` and ``DELETE /train/`` by :func:`stop_training` in ``app`` (MONAI Label's
    ``monailabel.app.app``); again is a no-op.

    The routes are replaced where FastAPI keeps them: in MONAI Label's routers (FastAPI >= 0.137 serves included
    routers by reference) and in the app's own routes (older versions copy every included route into them).
    RuntimeError when neither holds the route."""
    api = settings.MONAI_LABEL_API_STR
    for router, path, method, endpoint in (
        (infer_endpoints.router, "/infer/{model}", "POST", infer),
        (train_endpoints.router, "/train/{model}", "POST", train_model),
        (train_endpoints.router, "/train/", "POST", train_all),
        (train_endpoints.router, "/train/", "DELETE", stop_training),
    ):
        in_router = _replace(router, path, method, endpoint)
        if not (_replace(app.router, api + path, method, endpoint) or in_router):
            raise RuntimeError(
                f"{method} {api}{path}: expected MONAI Label's route in {router.prefix} router or the app's routes, "
                "found neither"
            )
