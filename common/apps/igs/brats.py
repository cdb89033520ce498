"""BraTS as IGS uses it: 2D axial slices with the four modalities as channels and the tumour as nested classes."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from monai.data import MetaTensor

from common.data.brats import BRATS_MODALITIES, brats_datalist
from common.data.splits import split_by_fold
from common.transforms.labels.array import ConvertBratsLabels

__all__ = ["BRATS_REGION_CLASSES", "load_brats_case", "case_slices", "brats_slices"]

logger = logging.getLogger(__name__)

BRATS_REGION_CLASSES = {"WT": (1, 2, 3), "TC": (2, 3), "ET": (3,)}
"""Each tumour region as the classes of :data:`~common.transforms.BRATS_NESTED_CLASSES` it unites."""


def _read(path: str | Path) -> np.ndarray:
    """The voxel data of one NIfTI file as float32 ``(H, W, D)`` (or ``(H, W, D, M)``); an unreadable file is named
    in the error."""
    try:
        return np.asarray(nib.load(str(path)).get_fdata(dtype=np.float32))
    except Exception as e:  # nibabel raises several types for truncated or corrupt data
        raise ValueError(f"{path}: expected readable NIfTI voxel data, found {type(e).__name__}: {e}") from e


def load_brats_case(item: dict) -> tuple[np.ndarray, np.ndarray | None]:
    """One datalist item of :func:`~common.data.brats_datalist` as ``(image, classes)``.

    ``item["image"]``: the modality files in order, or one 4D NIfTI ``(H, W, D, M)`` with the modalities on its last
    axis in that order (a MONAI Label datastore image). ``image`` float32 ``(M, H, W, D)``, each channel divided by
    its mean inside the brain (voxels where any modality is non-zero): a scale only, so the image stays a
    non-negative magnitude for the k-space forward model. ``classes`` uint8 ``(H, W, D)`` of
    :data:`~common.transforms.BRATS_NESTED_CLASSES` (0 background, 1 oedema, 2 non-enhancing core, 3 enhancing: the
    sum of the WT / TC / ET channels of :class:`~common.transforms.ConvertBratsLabels`, which refuses any label other
    than 0, 1, 2, 4 naming the file), or ``None`` where the item has no ``label``.
    """
    if isinstance(item["image"], (str, Path)):
        image = _read(item["image"])
        if image.ndim != 4:
            raise ValueError(
                f"{item['image']}: expected one 4D NIfTI (H, W, D, modalities) or a file per modality, found shape "
                f"{image.shape}"
            )
        image = np.ascontiguousarray(np.moveaxis(image, -1, 0))
        names = [f"{item['image']} (channel {c})" for c in range(len(image))]
    else:
        image = np.stack([_read(p) for p in item["image"]])
        names = [str(p) for p in item["image"]]
    brain = (image != 0).any(0)
    for c, name in enumerate(names):
        values = image[c][brain]
        mean = float(values.mean()) if values.size else 0.0
        if mean <= 0:
            raise ValueError(f"{name}: expected positive intensities inside the brain, found mean {mean:g}")
        image[c] /= mean
    if "label" not in item:
        return image, None
    seg = MetaTensor(torch.as_tensor(_read(item["label"]))[None], meta={"filename_or_obj": str(item["label"])})
    if seg.shape[1:] != image.shape[1:]:
        raise ValueError(f"{item['label']}: expected a label of shape {image.shape[1:]}, found {tuple(seg.shape[1:])}")
    regions = ConvertBratsLabels(("WT", "TC", "ET"))(seg)
    return image, regions.as_tensor().sum(0).to(torch.uint8).numpy()


def case_slices(item: dict, slices_per_case: int | None = None) -> list[dict]:
    """The axial slices of one case (an item as :func:`load_brats_case` reads it, with ``case`` naming it): every
    slice with brain in it, or ``slices_per_case`` of them evenly spaced; slice dicts as :func:`brats_slices`."""
    image, classes = load_brats_case(item)
    first = item["image"] if isinstance(item["image"], (str, Path)) else item["image"][0]
    spacing = tuple(float(s) for s in np.linalg.norm(nib.load(first).affine[:3, :3], axis=0))
    zs = np.flatnonzero(image.any(axis=(0, 1, 2)))
    if slices_per_case is not None and len(zs) > slices_per_case:
        zs = zs[np.round(np.linspace(0, len(zs) - 1, slices_per_case)).astype(int)]
    out = []
    for z in zs.tolist():
        label = classes[None, :, :, z]
        out.append(
            {
                "image": np.ascontiguousarray(image[..., z]),
                "label": np.ascontiguousarray(label),
                "patient": item["case"],
                "phase": "",
                "slice": z,
                "spacing": spacing,
                "tumour": bool(label.any()),
            }
        )
    return out


def brats_slices(
    dataset_dir: str | Path,
    split: str = "train",
    num_folds: int = 5,
    test_fold: int = 0,
    val_fold: int = 1,
    seed: int = 0,
    modalities: Sequence[str] = BRATS_MODALITIES,
    slices_per_case: int | None = None,
) -> list[dict]:
    """The axial slices of one patient-level split of a BraTS copy, as IGS searches and trains on them.

    The layout and headers are checked first (:func:`~common.data.brats_datalist`: a missing modality or
    segmentation, an unreadable header, a shape or affine that differs between the files of a case all raise, naming
    each file); the cases of ``split`` (:func:`~common.data.split_by_fold`: ``"train"``, ``"val"``, ``"test"`` or
    ``"all"`` over ``num_folds`` folds of ``seed``) are then read with :func:`load_brats_case` (unreadable voxel
    data and label 3 raise naming the file). Kept: every axial slice with brain in it, or ``slices_per_case`` of them
    evenly spaced (a memory setting: a 240x240 slice of four modalities is 0.9 MB in float32).

    Returns slice dicts, cases in name order and slices in ``z`` order: ``image`` float32 ``(M, H, W)``, ``label``
    uint8 ``(1, H, W)`` nested classes, ``patient`` (the case id), ``phase`` ``""``, ``slice`` (``z``), ``spacing``
    (mm along H, W, D from the affine), ``tumour`` (whether the slice holds any tumour).
    """
    if slices_per_case is not None and slices_per_case < 1:
        raise ValueError(f"slices_per_case: expected >= 1 or None, found {slices_per_case}")
    t0 = time.perf_counter()
    items = split_by_fold(
        brats_datalist(dataset_dir, None, modalities, num_folds, seed)["training"], split, test_fold, val_fold
    )
    out = [s for item in items for s in case_slices(item, slices_per_case)]
    logger.info("BraTS %s split: %d cases, %d slices in %.1f s", split, len(items), len(out), time.perf_counter() - t0)
    return out
