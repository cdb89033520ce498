"""MONAI Label infer tasks on the bundles: automatic segmentation (:class:`BundleSegmentation`) and the DeepIGeoS
click refinement (:class:`DeepIGeoSRefinement`), which keeps the current label of each image in the server."""

from __future__ import annotations

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

from common.apps.deepigeos import voxel_indices

from .bundles import BadRequest, BundleModel

logger = logging.getLogger(__name__)

__all__ = ["BundleSegmentation", "DeepIGeoSRefinement", "write_label"]


def write_label(label: np.ndarray | torch.Tensor, image_path: str) -> str:
    """Write ``label`` ``(*S)`` as a uint8 NIfTI with the affine of the image at ``image_path`` (the same grid).
    Returns the path of a new temporary file (MONAI Label sends it and deletes it)."""
    arr = np.asarray(label.cpu() if isinstance(label, torch.Tensor) else label).astype(np.uint8)
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

    def get(self) -> Any:
        with self._lock:
            mtime = os.stat(self.path()).st_mtime_ns
            if self._cached is None or self._cached[0] != mtime:
                self._cached = (mtime, self.load())
            return self._cached[1]


class BundleSegmentation(BasicInferTask):
    """Automatic segmentation with a bundle's ``inference.json``: its preprocessing, network, inferer and
    postprocessing (file writers dropped); the label comes back uint8 on the grid of the input image.

    Request params (beside MONAI Label's own): the entry's ``params`` (``igs_acdc``: ``pattern``, ``acceleration``).
    """

    def __init__(self, model: BundleModel) -> None:
        self.model = model
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

    def _get_network(self, device: str, data: Mapping[str, Any] | None) -> torch.nn.Module:
        return self._net.get()

    def writer(self, data: dict[str, Any], extension: str | None = None, dtype: Any = None) -> tuple[str, dict]:
        """``pred`` ``(1, *S)`` -> a uint8 NIfTI on the input's grid; the JSON names the weights file and its
        modification time (ns), which change when a train task has replaced the weights."""
        path = self.model.weights()
        return write_label(data["pred"][0], data["source_path"]), {  # bundles._source_path
            "weights": str(path),
            "weights_mtime_ns": self._net.mtime,
        }

    def segment(self, image_path: str, device: str) -> torch.Tensor:
        """The automatic label of the image at ``image_path``: ``(*S)`` uint8 on its grid."""
        _, data = self({"image": image_path, "device": device, "skip_writer": True, "logging": "WARNING"})
        return torch.as_tensor(np.asarray(data["pred"][0])).to(torch.uint8)


class DeepIGeoSRefinement(BasicInferTask):
    """DeepIGeoS click refinement (``refine`` of ``inference.json``: geodesic maps, R-Net, CRF-Net(fu) with the
    clicked voxels clamped) on the current label of the image.

    State: the server keeps, per image (its datastore path), the latest label this task returned, in memory. The
    first request on an image refines the automatic label of ``auto`` (P-Net); every later one refines the latest
    refinement. ``{"reset": true}`` drops it (the next refinement starts again from the automatic label; with no
    clicks the automatic label itself comes back); a server restart drops them all.

    Request params: ``foreground``, ``background``: ``[[i, j, k], ...]`` voxel indices of the image (MONAI Label's
    click convention; all clicks so far or only the new ones: every click sent is clamped to its label);
    ``reset``: bool.
    """

    def __init__(self, model: BundleModel, auto: BundleSegmentation) -> None:
        self.model, self.auto = model, auto
        parser = model.parser
        self._refine = _Reloading(
            lambda: parser().get_parsed_content("refine_weights"), lambda: parser().get_parsed_content("refine")
        )
        self._labels: dict[str, torch.Tensor] = {}
        self._images: dict[str, torch.Tensor] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._state_lock = threading.Lock()
        super().__init__(
            path=self._refine.path(),
            network=None,
            type=InferType.DEEPGROW,
            labels=model.labels,
            dimension=3,
            description=f"{model.entry.name}: DeepIGeoS refinement of the current label with clicks",
            config={"reset": False},
        )

    def is_valid(self) -> bool:
        return os.path.isfile(self._refine.path())

    def pre_transforms(self, data: Mapping[str, Any] | None = None) -> Sequence:
        """None: :meth:`__call__` runs the bundle's ``refine`` (which preprocesses the image itself)."""
        return []

    def post_transforms(self, data: Mapping[str, Any] | None = None) -> Sequence:
        """None: ``refine`` returns the label on the input grid."""
        return []

    def _lock(self, key: str) -> threading.Lock:
        with self._state_lock:
            return self._locks.setdefault(key, threading.Lock())

    def __call__(self, request: dict[str, Any], callbacks: Any = None) -> tuple[str, dict]:
        """Refine the image's current label with the request's clicks -> (label file, result JSON)."""
        path = request["image"]
        reset = request.get("reset", False)
        if not isinstance(reset, bool):
            raise BadRequest(f"params.reset: expected true or false, found {reset!r}")
        fg, bg = request.get("foreground") or [], request.get("background") or []
        device = request.get("device") or "cpu"
        device = device if isinstance(device, str) else device[0]
        with self._lock(path):
            if reset:
                self._labels.pop(path, None)
            if path not in self._images:
                self._images[path] = LoadImage(ensure_channel_first=True, image_only=True)(path)
            try:  # checked before the automatic segmentation runs; refine checks them against its brain crop
                for name, clicks in (("foreground", fg), ("background", bg)):
                    voxel_indices(clicks, f"params.{name}", self._images[path].shape[1:])
            except ValueError as e:
                raise BadRequest(str(e)) from e
            start = "refinement" if path in self._labels else "automatic"
            if path not in self._labels:
                self._labels[path] = self.auto.segment(path, device)
            if fg or bg:
                try:
                    self._labels[path] = self._refine.get()(
                        image=self._images[path], label=self._labels[path], foreground=fg, background=bg
                    )
                except ValueError as e:
                    raise BadRequest(str(e)) from e
            label = self._labels[path]
        return write_label(label, path), {"clicks": {"foreground": len(fg), "background": len(bg)}, "start": start}
