"""Per-volume scores of binary segmentations (Dice per volume / slice, largest component) and their summary."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import torch
from monai.config import NdarrayOrTensor
from monai.metrics import compute_dice
from monai.transforms import KeepLargestConnectedComponent

__all__ = ["SCORES", "binary_volume_scores", "summarise"]

SCORES = {
    "dice_volume": "Dice per volume",
    "dice_volume_lcc": "Dice per volume, largest 3D component kept",
    "dice_slice_tumour": "Dice per slice, slices with foreground in the ground truth",
    "dice_slice_all": "Dice per slice, all slices (empty vs empty = 1)",
}


def binary_volume_scores(pred: NdarrayOrTensor, label: NdarrayOrTensor) -> dict[str, float]:
    """Scores of one binary prediction against its ground truth, both ``(1, H, W, D)`` (``D`` the slice axis,
    foreground > 0.5).

    Returns the :data:`SCORES` (``dice_volume`` over the stacked slices; ``dice_volume_lcc`` after keeping only the
    largest 3D connected component of the prediction, full connectivity, as in Buda et al.'s post-processing;
    ``dice_slice_tumour`` the mean over slices with ground-truth foreground, NaN if there are none; ``dice_slice_all``
    the mean over all slices), plus ``slices``, ``tumour_slices``, ``label_voxels`` and ``pred_voxels``. A volume
    whose ground truth is empty scores 1 if the prediction is empty too, else 0.
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
    return {
        "dice_volume": float(compute_dice(p[None], g[None], ignore_empty=False)),
        "dice_volume_lcc": float(compute_dice(lcc[None], g[None], ignore_empty=False)),
        "dice_slice_tumour": float(per_slice[tumour].mean()) if tumour.any() else math.nan,
        "dice_slice_all": float(per_slice.mean()),
        "slices": int(p.shape[-1]),
        "tumour_slices": int(tumour.sum()),
        "label_voxels": int(g.sum()),
        "pred_voxels": int(p.sum()),
    }


def summarise(rows: Sequence[Mapping[str, float]], keys: Sequence[str] = tuple(SCORES)) -> dict[str, dict[str, float]]:
    """Mean, standard deviation (population), median, min, max and count over ``rows`` of each key, NaN left out."""
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
