"""Per-volume scores of binary segmentations (Dice per volume / slice, largest component, surface distances) and
their summary."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import torch
from monai.config import NdarrayOrTensor
from monai.metrics import compute_dice
from monai.transforms import KeepLargestConnectedComponent

from common.metrics.surface import surface_distances, surface_unit

__all__ = ["SCORES", "binary_volume_scores", "surface_status", "summarise"]

_PX = "pixels: 1 per pixel along H and W, 1 per slice"

SCORES = {
    "dice_volume": "Dice per volume",
    "dice_volume_lcc": "Dice per volume, largest 3D component kept",
    "dice_slice_tumour": "Dice per slice, slices with foreground in the ground truth",
    "dice_slice_all": "Dice per slice, all slices (empty vs empty = 1)",
    "hd95_mm": "HD95 per volume (mm)",
    "assd_mm": "ASSD per volume (mm)",
    "hd95_px": f"HD95 per volume ({_PX})",
    "assd_px": f"ASSD per volume ({_PX})",
}
"""Score keys and their descriptions; a row holds the ``_mm`` or the ``_px`` surface pair, by whether a spacing was
given. HD95: 95th-percentile symmetric Hausdorff distance; ASSD: average symmetric surface distance (see
:func:`~common.metrics.surface.surface_distances`)."""


def surface_status(pred_voxels: int, label_voxels: int) -> str:
    """``measured`` (both masks non-empty), ``missed`` (empty prediction), ``spurious`` (empty ground truth) or
    ``absent`` (both empty): the empty-mask cases of :data:`~common.metrics.surface.EMPTY_MASK_CONVENTION`."""
    if pred_voxels and label_voxels:
        return "measured"
    if label_voxels:
        return "missed"
    return "spurious" if pred_voxels else "absent"


def binary_volume_scores(
    pred: NdarrayOrTensor, label: NdarrayOrTensor, spacing: Sequence[float] | None = None
) -> dict[str, float | int | str]:
    """Scores of one binary prediction against its ground truth, both ``(1, H, W, D)`` (``D`` the slice axis,
    foreground > 0.5).

    Args:
        pred, label: the binary masks.
        spacing: voxel size ``(3,)`` in mm along H, W, D for the surface distances; None (e.g. kaggle_3m tifs,
            which carry no geometry): 1 per pixel along H and W and 1 per slice, and the keys end in ``_px``.

    Returns the :data:`SCORES` (``dice_volume`` over the stacked slices; ``dice_volume_lcc`` after keeping only the
    largest 3D connected component of the prediction, full connectivity, as in Buda et al.'s post-processing;
    ``dice_slice_tumour`` the mean over slices with ground-truth foreground, NaN if there are none; ``dice_slice_all``
    the mean over all slices; ``hd95_mm`` and ``assd_mm``, or ``hd95_px`` and ``assd_px`` without ``spacing``, over the
    whole volume), plus ``slices``, ``tumour_slices``, ``label_voxels``, ``pred_voxels`` and ``surface`` (see
    :func:`surface_status`). A volume whose ground truth is empty scores Dice 1 if the prediction is empty too, else 0.
    HD95 and ASSD are NaN unless both masks are non-empty (``surface`` says which case), never 0 or inf.
    """
    p = (torch.as_tensor(pred) > 0.5).float().cpu()
    g = (torch.as_tensor(label) > 0.5).float().cpu()
    if p.shape != g.shape or p.ndim != 4 or p.shape[0] != 1:
        raise ValueError(
            f"binary_volume_scores: expected pred and label of equal shape (1, H, W, D), found "
            f"{tuple(p.shape)} and {tuple(g.shape)}"
        )
    lcc = torch.as_tensor(KeepLargestConnectedComponent(is_onehot=False)(p.clone())).float()  # it works in place
    per_slice = compute_dice(p.permute(3, 0, 1, 2), g.permute(3, 0, 1, 2), ignore_empty=False)[:, 0]
    tumour = g.flatten(0, 2).sum(0) > 0
    surface = surface_distances(p[None], g[None], spacing, include_background=True)
    unit = surface_unit(spacing)
    return {
        "dice_volume": float(compute_dice(p[None], g[None], ignore_empty=False)),
        "dice_volume_lcc": float(compute_dice(lcc[None], g[None], ignore_empty=False)),
        "dice_slice_tumour": float(per_slice[tumour].mean()) if tumour.any() else math.nan,
        "dice_slice_all": float(per_slice.mean()),
        f"hd95_{unit}": float(surface.hd95[0, 0]),
        f"assd_{unit}": float(surface.assd[0, 0]),
        "slices": int(p.shape[-1]),
        "tumour_slices": int(tumour.sum()),
        "label_voxels": int(g.sum()),
        "pred_voxels": int(p.sum()),
        "surface": surface_status(int(p.sum()), int(g.sum())),
    }


def summarise(rows: Sequence[Mapping[str, object]], keys: Sequence[str] | None = None) -> dict[str, dict[str, float]]:
    """Mean, standard deviation (population), median, min, max and count over ``rows`` of each key, NaN left out.

    ``keys``: by default the :data:`SCORES` present in the first row, in that order.
    """
    if keys is None:
        keys = [k for k in SCORES if rows and k in rows[0]]
    out = {}
    for key in keys:
        values = np.array([r[key] for r in rows], dtype=np.float64)
        v = values[~np.isnan(values)]
        if v.size:
            out[key] = {
                "mean": float(v.mean()),
                "std": float(v.std()),
                "median": float(np.median(v)),
                "min": float(v.min()),
                "max": float(v.max()),
                "n": int(v.size),
            }
        else:
            out[key] = {**dict.fromkeys(("mean", "std", "median", "min", "max"), math.nan), "n": 0}
    return out
