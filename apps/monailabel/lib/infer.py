"""MONAI Label infer tasks on the bundles: automatic segmentation (:class:`BundleSegmentation`) and the DeepIGeoS
click refinement (:class:`DeepIGeoSRefinement`), which keeps each user's label and clicks of each image in the
server."""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import tempfile
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import nibabel as nib
import numpy as np
import torch
from monai.transforms import Compose, LoadImage
from monailabel.interfaces.tasks.infer_v2 import InferType
from monailabel.tasks.infer.basic_infer import BasicInferTask

from common.apps.deepigeos import RefinementCache

from .bundles import BadRequest, BundleModel
from .state import Click, LRUCache, RefinementState, disjoint, parse_clicks, tensor_bytes

logger = logging.getLogger(__name__)

__all__ = ["REFINE_FROM", "BundleSegmentation", "DeepIGeoSRefinement", "image_key", "write_on_grid"]

REFINE_FROM = ("initial", "previous")
"""What a refinement refines: the start label with every click so far, or the latest label with the new clicks."""


def write_on_grid(array: np.ndarray | torch.Tensor, image_path: str, dtype: type = np.uint8) -> str:
    """Write ``array`` ``(*S)`` (a label) or ``(*S, M)`` (an image of ``M`` channels) as a NIfTI of ``dtype`` with the
    affine of the image at ``image_path`` (the same grid). Returns the path of a new temporary file (MONAI Label sends
    it and deletes it)."""
    arr = np.asarray(array.cpu() if isinstance(array, torch.Tensor) else array).astype(dtype)
    fd, path = tempfile.mkstemp(suffix=".nii.gz")
    os.close(fd)
    nib.save(nib.Nifti1Image(arr, nib.load(image_path).affine), path)
    return path


class _Reloading:
    """What ``load`` returns (a network, the ``refine`` callable), loaded again when the file at ``path()`` changes
    (a train task replaced the weights)."""

    def __init__(self, path: Callable[[], str], load: Callable[[], Any]) -> None:
        self.path, self.load = path, load
        self._cached: tuple[int, Any] | None = None
        self._lock = threading.Lock()

    @property
    def mtime(self) -> int | None:
        """The modification time (ns) of the file last loaded (None before the first load)."""
        return None if self._cached is None else self._cached[0]

    def loaded(self) -> tuple[int, Any]:
        """(the modification time (ns) of the file it was loaded from, what ``load`` returned), loaded again first
        when the file has changed."""
        with self._lock:
            mtime = os.stat(self.path()).st_mtime_ns
            if self._cached is None or self._cached[0] != mtime:
                self._cached = (mtime, self.load())
            return self._cached

    def get(self) -> Any:
        """What ``load`` returned, loaded again first when the file has changed."""
        return self.loaded()[1]


class BundleSegmentation(BasicInferTask):
    """Automatic segmentation with a bundle's ``inference.json``: its preprocessing, network, inferer and
    postprocessing (file writers dropped); the label comes back uint8 on the grid of the input image.

    With ``shared``, each label made with the bundle's default params is also kept there per image (the key of
    :func:`image_key`) with the modification time of the weights file it was made with, for the bundle's refinement
    task to start from (:meth:`automatic_label`) instead of segmenting the same image again.

    Request params (beside MONAI Label's own): the entry's ``params`` (``igs_acdc``: ``pattern``, ``acceleration``).

    Args:
        model: the bundle.
        shared: where the labels are kept for the refinement task (None: not kept).
    """

    def __init__(self, model: BundleModel, shared: LRUCache | None = None) -> None:
        self.model, self.shared = model, shared
        self.runs = 0  # the segmentations run so far (network calls)
        self._runs_lock = threading.Lock()
        self._net = _Reloading(lambda: str(model.weights()), model.network)
        self._pipelines: dict[tuple, tuple[Compose, Any, Compose]] = {}
        self._pipelines_lock = threading.Lock()
        super().__init__(
            path=str(model.weights()),
            network=None,
            type=InferType.SEGMENTATION,
            labels=model.labels,
            dimension=3,
            description=f"{model.entry.name}: automatic segmentation ({model.configs[0]})",
            config={name: None for name in model.entry.params},
        )

    def params(self, data: Mapping[str, Any]) -> dict[str, Any]:
        """The request's values of the entry's params (None: the bundle's default)."""
        return {k: data[k] for k in self.model.entry.params if data.get(k) is not None}

    def _pipeline(self, data: Mapping[str, Any]) -> tuple[Compose, Any, Compose]:
        params = self.params(data)
        key = tuple(sorted(params.items()))
        with self._pipelines_lock:
            if key not in self._pipelines:
                self._pipelines[key] = self.model.transforms(params)
            return self._pipelines[key]

    def pre_transforms(self, data: Mapping[str, Any] | None = None) -> Sequence:
        return self._pipeline(data or {})[0].transforms

    def inferer(self, data: Mapping[str, Any] | None = None) -> Any:
        return self._pipeline(data or {})[1]

    def post_transforms(self, data: Mapping[str, Any] | None = None) -> Sequence:
        return self._pipeline(data or {})[2].transforms

    def _get_network(self, device: str, data: dict[str, Any] | None) -> torch.nn.Module:
        """The bundle's network (loaded again when its weights file has changed); the modification time of the file
        it was loaded from goes into ``data["weights_mtime_ns"]``."""
        mtime, network = self._net.loaded()
        if data is not None:
            data["weights_mtime_ns"] = mtime
        with self._runs_lock:
            self.runs += 1
        return network

    def weights_info(self, data: Mapping[str, Any]) -> dict[str, Any]:
        """The result JSON's ``weights`` (the file) and ``weights_mtime_ns`` (its modification time when loaded for
        this run), which change when a train task has replaced the weights."""
        return {"weights": str(self.model.weights()), "weights_mtime_ns": data.get("weights_mtime_ns")}

    def writer(self, data: dict[str, Any], extension: str | None = None, dtype: Any = None) -> tuple[str, dict]:
        """``pred`` ``(1, *S)`` -> a uint8 NIfTI on the input's grid, kept in ``shared`` when the run used the default
        params; the JSON: :meth:`weights_info` and ``runs``, the segmentations this task has run."""
        if self.shared is not None and not self.params(data):
            key = image_key(data.get("image_source"), data["source_path"])  # bundles._source_path
            self._share(key, _label(data), data["weights_mtime_ns"])
        return write_on_grid(data["pred"][0], data["source_path"]), {**self.weights_info(data), "runs": self.runs}

    def _share(self, key: str, label: torch.Tensor, mtime: int) -> None:
        """Keep ``label``, made with the weights file of modification time ``mtime``, as the image's automatic label."""
        self.shared.put(("automatic", self.model.entry.name, key), (mtime, label), tensor_bytes(label))

    def automatic_label(self, key: str, image_path: str, device: str) -> tuple[torch.Tensor, bool]:
        """The automatic label ``(*S)`` uint8 of the image of ``key`` (:func:`image_key`) at ``image_path`` -> (label,
        shared): the one kept in ``shared`` when it was made with the weights file as it is now (``shared`` True),
        else segmented now (and kept)."""
        if self.shared is not None:
            kept = self.shared.get(("automatic", self.model.entry.name, key))
            if kept is not None and kept[0] == os.stat(self.model.weights()).st_mtime_ns:
                return kept[1], True
        _, data = self({"image": image_path, "device": device, "skip_writer": True, "logging": "WARNING"})
        label = _label(data)
        if self.shared is not None:
            self._share(key, label, data["weights_mtime_ns"])
        return label, False


class DeepIGeoSRefinement(BasicInferTask):
    """DeepIGeoS click refinement (``refine`` of ``inference.json``: geodesic maps, R-Net, CRF-Net(fu) with the
    clicked voxels clamped) of a user's label of an image, with the clicks of that user on that image so far.

    State: a :class:`~.state.RefinementState` per user and image, in ``cache`` (least recently used ones evicted;
    a server restart drops them all). The user is the request's ``client_id`` (MONAI Label's client sends it), else
    the session id, else ``"anonymous"``; the image is the datastore id (and its file's modification time), the
    session id, or for an image uploaded with the request its content hash (every upload gets a new temporary path).
    A new state starts from the label the client uploaded with the request (its ``label`` file: same shape as the
    image, values 0/1) or else from the automatic segmentation of ``auto``, with no click: the label ``auto`` made of
    this image for an automatic request (kept per image, :meth:`BundleSegmentation.automatic_label`) when it was made
    with the weights file as it is now, else segmented for this request.

    Clicks: the request's ``foreground`` / ``background`` clicks update the state's
    (:meth:`~.state.RefinementState.add`). With ``all_clicks`` false (the default when a request does not send it)
    they are merged into the clicks so far: a client may send every click so far or only the new ones, repeated
    clicks count once, a voxel sent as the other kind than before changes kind, and a click is dropped only by a
    reset. With ``all_clicks`` true the request sends every click so far (3D Slicer sends all its points each time,
    and sends the task's ``config``, where ``all_clicks`` is true, with every request): a click so far that it does not
    send is dropped (the user deleted the point). A voxel sent as both kinds in one request is refused (400 naming
    it). Then, with ``refine_from``:

    - ``"initial"``: the start label refined with all the clicks so far (DeepIGeoS' evaluation: every refinement
      from the automatic segmentation); with no click (none yet, or all deleted), the start label;
    - ``"previous"``: the latest label refined with the clicks new in this request; with none, the latest label (a
      dropped click leaves the label as it is: its effect is part of it).

    ``reset_state`` (3D Slicer) or ``reset``: drop the state first; an uploaded ``label`` also starts a new state.

    Request params: ``foreground``, ``background``: ``[[i, j, k], ...]`` voxel indices of the image;
    ``refine_from``: ``"initial"`` / ``"previous"`` (default: the app's); ``all_clicks``, ``reset_state``, ``reset``:
    bool; ``client_id``: str. The result JSON names the start (``"automatic"`` / ``"uploaded"``), whether the state is
    ``"new"`` or ``"kept"``, the mode, the clicks so far, the new and the dropped ones, for a new state started from
    the automatic label whether that was the automatic task's (``automatic_label``: ``"shared"``) or segmented now
    (``"computed"``), the automatic task's runs so far (``automatic_runs``), the user and image keys, and the cache's
    entries and bytes.

    Args:
        model: the bundle.
        auto: its automatic segmentation task (the start label).
        cache: where the states and the loaded images are kept (shared by the app's refinement tasks).
        refine_from: the default of ``refine_from``.
    """

    def __init__(
        self, model: BundleModel, auto: BundleSegmentation, cache: LRUCache, refine_from: str = "initial"
    ) -> None:
        if refine_from not in REFINE_FROM:
            raise ValueError(f"refine_from: expected one of {list(REFINE_FROM)}, found {refine_from!r}")
        self.model, self.auto, self.cache, self.refine_from = model, auto, cache, refine_from
        parser = model.parser
        self._refine = _Reloading(
            lambda: parser().get_parsed_content("refine_weights"), lambda: parser().get_parsed_content("refine")
        )
        self._locks = [threading.Lock() for _ in range(64)]  # one user's requests on one image run one at a time
        super().__init__(
            path=self._refine.path(),
            network=None,
            type=InferType.DEEPGROW,
            labels=model.labels,
            dimension=3,
            description=f"{model.entry.name}: DeepIGeoS refinement of the user's label with their clicks",
            config={"refine_from": refine_from, "all_clicks": True, "reset_state": False},
        )

    def is_valid(self) -> bool:
        return os.path.isfile(self._refine.path())

    def pre_transforms(self, data: Mapping[str, Any] | None = None) -> Sequence:
        """None: :meth:`__call__` runs the bundle's ``refine`` (which preprocesses the image itself)."""
        return []

    def post_transforms(self, data: Mapping[str, Any] | None = None) -> Sequence:
        """None: ``refine`` returns the label on the input grid."""
        return []

    def _image(self, key: str, path: str) -> torch.Tensor:
        """The image ``(1, *S)`` as loaded (a MetaTensor), from the cache."""
        image = self.cache.get(("image", key))
        if image is None:
            image = LoadImage(ensure_channel_first=True, image_only=True)(path)
            self.cache.put(("image", key), image, tensor_bytes(image))
        return image

    def _run(
        self,
        image: torch.Tensor,
        label: torch.Tensor,
        fg: Sequence[Click],
        bg: Sequence[Click],
        geodesic: RefinementCache,
    ) -> torch.Tensor:
        """The bundle's ``refine`` -> ``(*S)`` uint8, reusing ``geodesic`` (the state's maps and preprocessed image;
        ``image`` is the cached object, the same at every step); its ValueErrors (clicks outside the brain crop) as
        BadRequest."""
        try:
            return self._refine.get()(
                image=image,
                label=label,
                foreground=[list(c) for c in fg],
                background=[list(c) for c in bg],
                cache=geodesic,
            )
        except ValueError as e:
            raise BadRequest(str(e)) from e

    def __call__(self, request: dict[str, Any], callbacks: Any = None) -> tuple[str, dict]:
        """Refine the user's label of the image with the request's clicks -> (label file, result JSON)."""
        path = request["image"]
        reset = _flag(request, "reset_state") or _flag(request, "reset")
        every = _flag(request, "all_clicks")
        mode = request.get("refine_from", self.refine_from)
        if mode not in REFINE_FROM:
            raise BadRequest(f"params.refine_from: expected one of {list(REFINE_FROM)}, found {mode!r}")
        user, key_of_image = _user(request), image_key(request.get("image_source"), path)
        device = request.get("device") or "cpu"
        device = device if isinstance(device, str) else device[0]
        image = self._image(key_of_image, path)
        shape = tuple(image.shape[1:])
        fg = parse_clicks(request.get("foreground"), "foreground", shape)
        bg = parse_clicks(request.get("background"), "background", shape)
        disjoint(fg, bg)
        uploaded = None if request.get("label") is None else _uploaded_label(request["label"], shape)
        key = ("state", self.model.entry.name, user, key_of_image)
        automatic = None  # how a new state's automatic start label was had
        with self._locks[hash(key) % len(self._locks)]:
            kept = None if reset or uploaded is not None else self.cache.get(key)
            if kept is not None:
                state = dataclasses.replace(kept)  # the cached state changes only when this request succeeds
            elif uploaded is not None:
                state = RefinementState.starting(uploaded, "uploaded")
            else:
                start, shared = self.auto.automatic_label(key_of_image, path, device)
                state, automatic = RefinementState.starting(start, "automatic"), "shared" if shared else "computed"
            changes = state.add(fg, bg, every)
            if mode == "initial":
                clicked = state.foreground or state.background
                state.label = (
                    self._run(image, state.start, state.foreground, state.background, state.geodesic)
                    if clicked
                    else state.start
                )
            elif changes.foreground or changes.background:
                state.label = self._run(image, state.label, changes.foreground, changes.background, state.geodesic)
            self.cache.put(key, state, state.nbytes)
        return write_on_grid(state.label, path), {
            "weights": self._refine.path(),
            "weights_mtime_ns": self._refine.mtime,
            "start": state.origin,
            "state": "new" if kept is None else "kept",
            "refine_from": mode,
            "clicks": {"foreground": len(state.foreground), "background": len(state.background)},
            "new_clicks": {"foreground": len(changes.foreground), "background": len(changes.background)},
            "dropped_clicks": {
                "foreground": len(changes.dropped_foreground),
                "background": len(changes.dropped_background),
            },
            "automatic_label": automatic,
            "automatic_runs": self.auto.runs,
            "user": user,
            "image": key_of_image,
            "cache": self.cache.stats(),
        }


def _label(data: Mapping[str, Any]) -> torch.Tensor:
    """A run's ``pred`` ``(1, *S)`` -> the label ``(*S)`` uint8."""
    return torch.as_tensor(np.asarray(data["pred"][0])).to(torch.uint8)


def _flag(request: Mapping[str, Any], name: str) -> bool:
    """The request's boolean ``name`` (absent: False); BadRequest for another type."""
    value = request.get(name, False)
    if not isinstance(value, bool):
        raise BadRequest(f"params.{name}: expected true or false, found {value!r}")
    return value


def _user(request: Mapping[str, Any]) -> str:
    """Whose state: the request's ``client_id``, else its session's id, else ``"anonymous"``."""
    client = request.get("client_id")
    if client is not None and not isinstance(client, str):
        raise BadRequest(f"params.client_id: expected a string, found {client!r}")
    source = request.get("image_source", {})
    return client or (f"session:{source['id']}" if source.get("kind") == "session" else "anonymous")


def image_key(source: Mapping[str, str] | None, path: str) -> str:
    """Which image a request names (``source``: the app's ``image_source``; None: a task called with a path, as by
    batch inference), with its file at ``path``: ``session:<id>``, ``upload:<sha1 of the file>`` (every upload gets a
    new temporary path), else ``<kind>:<id>@<file mtime ns>`` (a datastore image; ``file`` for a path)."""
    source = source or {"kind": "file", "id": path}
    if source["kind"] == "session":
        return f"session:{source['id']}"
    if source["kind"] == "upload":
        with open(path, "rb") as f:
            return f"upload:{hashlib.file_digest(f, 'sha1').hexdigest()}"
    return f"{source['kind']}:{source['id']}@{os.stat(path).st_mtime_ns}"


def _uploaded_label(path: str, shape: tuple[int, ...]) -> torch.Tensor:
    """The label file the client uploaded -> ``(*S)`` uint8; BadRequest unless it is an image MONAI reads, of the
    image's spatial ``shape``, with values 0/1."""
    try:
        label = LoadImage(image_only=True)(path)
    except Exception as e:  # whatever the reader raises on a file that is not an image it reads
        raise BadRequest(f"label: expected the uploaded label file to be an image file MONAI reads, found: {e}") from e
    if tuple(label.shape) != shape:
        raise BadRequest(
            f"label: expected the uploaded label file of the image's shape {shape}, found {tuple(label.shape)}"
        )
    values = torch.unique(torch.as_tensor(label))
    if not bool(((values == 0) | (values == 1)).all()):
        raise BadRequest(
            f"label: expected the uploaded label file with values 0 / 1, found values {values[:6].tolist()}"
        )
    return torch.as_tensor(label).to(torch.uint8)
