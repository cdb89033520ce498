"""MONAI Label infer tasks for a bundle's further inference configs (:attr:`BundleEntry.infer_tasks`): ``igs_brats``'
per-slice tumour classification (:class:`SliceClassification`, a result JSON and no image) and its reconstruction
(:class:`Reconstruction`, the reconstructed modalities as one NIfTI on the input's grid). Both run the configs'
preprocessing (the k-space undersampling of the request's ``pattern`` / ``acceleration``), network and inferer as
:class:`~lib.infer.BundleSegmentation` does; :func:`task_infers` makes those whose weights exist."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from monailabel.interfaces.tasks.infer_v2 import InferTask, InferType

from .bundles import BundleModel
from .infer import BundleSegmentation, write_on_grid

logger = logging.getLogger(__name__)

__all__ = ["TASKS", "Reconstruction", "SliceClassification", "task_infers"]


class SliceClassification(BundleSegmentation):
    """Per-slice classification (``classification_inference.json``: ``network`` applies a 2D classifier to every
    slice along the image's last axis, ``postprocessing`` its softmax, ``pred`` ``(K, D)``).

    Result: no image (MONAI Label's ``output=all`` then answers with the JSON alone), and the JSON ``{"class_names":
    [...], "p_<class>": [one probability per slice], "prediction": [the more probable class per slice], "weights",
    "weights_mtime_ns"}``, the columns of the bundle's ``slice_probabilities.csv``. Request params: those of the
    bundle (``pattern``, ``acceleration``).
    """

    def __init__(self, model: BundleModel) -> None:
        super().__init__(model)
        self.class_names = [str(c) for c in model.parser().get_parsed_content("class_names")]
        self.type = InferType.CLASSIFICATION
        self.labels = []  # the classes are not label values of a segmentation: they come in the result JSON
        self.description = f"{model.entry.name}: {' / '.join(self.class_names)} per axial slice ({model.configs[1]})"

    def writer(self, data: dict[str, Any], extension: str | None = None, dtype: Any = None) -> tuple[str | None, dict]:
        prob = torch.as_tensor(data["pred"]).detach().float().cpu()
        if prob.ndim != 2 or prob.shape[0] != len(self.class_names):
            raise ValueError(
                f"pred: expected ({len(self.class_names)}, slices), one probability per class {self.class_names} and "
                f"slice, found {tuple(prob.shape)}"
            )
        result: dict[str, Any] = {"class_names": self.class_names}
        result.update({f"p_{c}": prob[i].tolist() for i, c in enumerate(self.class_names)})
        result["prediction"] = [self.class_names[int(k)] for k in prob.argmax(0)]
        return None, {**result, **self.weights_info(data)}


class Reconstruction(BundleSegmentation):
    """Reconstruction of every modality from the undersampled input (``reconstruction_inference.json``: ``pred``
    ``(M, *S)`` in [0, 1], each slice and modality on the scale of its own maximum, see the bundle's card).

    Result: a float32 NIfTI ``(*S, M)`` with the input image's affine (the modalities on the last axis, in the order
    of the bundle's ``modalities``, as the datastore's 4D images), and the JSON ``{"modalities", "weights",
    "weights_mtime_ns"}``. Request params: those of the bundle (``pattern``, ``acceleration``).
    """

    def __init__(self, model: BundleModel) -> None:
        super().__init__(model)
        self.modalities = [str(m) for m in model.parser().get_parsed_content("modalities")]
        self.type = InferType.OTHERS
        self.labels = []  # an image, not a label
        self.description = f"{model.entry.name}: {', '.join(self.modalities)} reconstructed ({model.configs[1]})"

    def writer(self, data: dict[str, Any], extension: str | None = None, dtype: Any = None) -> tuple[str, dict]:
        volume = torch.as_tensor(data["pred"]).detach().float().cpu().numpy()
        if volume.ndim != 4 or volume.shape[0] != len(self.modalities):
            raise ValueError(f"pred: expected ({len(self.modalities)}, H, W, D), found {volume.shape}")
        path = write_on_grid(np.moveaxis(volume, 0, -1), data["source_path"], np.float32)  # bundles._source_path
        return path, {"modalities": self.modalities, **self.weights_info(data)}


TASKS: Mapping[str, type[BundleSegmentation]] = {
    "classification": SliceClassification,
    "reconstruction": Reconstruction,
}
"""The infer task class of each kind an entry's ``infer_tasks`` may name."""


def task_infers(model: BundleModel) -> dict[str, InferTask]:
    """``{"<bundle>_<kind>": task}`` for each of the entry's ``infer_tasks`` whose weights exist; a missing weights file
    is logged (naming it) and the task skipped, as the app does for a bundle."""
    infers: dict[str, InferTask] = {}
    for kind in model.entry.infer_tasks:
        if kind not in TASKS:
            raise ValueError(f"{model.entry.name}.infer_tasks: expected kinds among {sorted(TASKS)}, found {kind!r}")
        task_model = model.for_task(kind)
        weights = task_model.weights()
        if weights.is_file():
            infers[f"{model.entry.name}_{kind}"] = TASKS[kind](task_model)
        else:
            logger.warning("skipping %s_%s: no weights at %s", model.entry.name, kind, weights)
    return infers
