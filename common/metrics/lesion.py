"""Scores of binary lesion segmentations: the voxel scores of Tomita et al. 2020 (Dice per subject and pooled over
subjects, Hausdorff distance, ASSD, true-positive rate, precision) and the ATLAS v2.0 challenge's lesion scores
(lesion-wise F1, simple lesion count difference, volume difference)."""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence

import numpy as np
import torch
from monai.config import NdarrayOrTensor
from monai.metrics import compute_hausdorff_distance
from scipy import ndimage

from common.metrics.segmentation import surface_status
from common.metrics.surface import surface_distances

__all__ = ["LESION_SCORES", "lesion_components", "lesion_f1", "lesion_scores", "micro_dice"]

LESION_SCORES = {
    "dice": "Dice per subject, 2|P∩G| / (|P| + |G|) (1 when both masks are empty)",
    "hd_mm": "Hausdorff distance (maximum, symmetric) between the mask surfaces, mm",
    "assd_mm": "average symmetric surface distance, mm",
    "tpr": "true-positive rate (sensitivity) |P∩G| / |G| (0 when G is empty)",
    "precision": "precision |P∩G| / |P| (0 when P is empty)",
    "lesion_f1": "lesion-wise F1 (ATLAS v2.0): TP / (TP + (FP + FN) / 2) over 26-connected lesions (1 when both empty)",
    "lesion_count_difference": "simple lesion count difference (ATLAS v2.0): |#lesions(P) - #lesions(G)|, 26-connected",
    "volume_difference": "volume difference (ATLAS v2.0): ||P| - |G||, voxels",
    "volume_difference_ml": "volume difference ||P| - |G|| in ml (voxels times the voxel volume)",
}
"""Per-subject score keys and their definitions (P the predicted mask, G the ground truth). HD and ASSD follow
:data:`~common.metrics.surface.EMPTY_MASK_CONVENTION` (NaN unless both masks are non-empty; the case is counted).
The micro-DSC (:func:`micro_dice`) pools the voxels of all subjects."""


def _mask(x: NdarrayOrTensor) -> np.ndarray:
    a = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    return a > 0.5


def lesion_components(mask: NdarrayOrTensor, connectivity: int = 26) -> tuple[np.ndarray, int]:
    """Connected lesions of a 3D binary mask ``(H, W, D)``: (label map, count); ``connectivity`` 6, 18 or 26."""
    rank = {6: 1, 18: 2, 26: 3}.get(connectivity)
    if rank is None:
        raise ValueError(f"connectivity: expected 6, 18 or 26, found {connectivity}")
    m = _mask(mask)
    if m.ndim != 3:
        raise ValueError(f"mask: expected a 3D volume (H, W, D), found shape {m.shape}")
    labels, n = ndimage.label(m, structure=ndimage.generate_binary_structure(3, rank))
    return labels, int(n)


def lesion_f1(pred: NdarrayOrTensor, label: NdarrayOrTensor, connectivity: int = 26) -> tuple[float, int, int, int]:
    """Lesion-wise F1 as the ATLAS v2.0 challenge defines it: a ground-truth lesion (connected component) is a true
    positive when at least one of its voxels is predicted, else a false negative; a predicted lesion that touches no
    ground-truth voxel is a false positive; F1 = TP / (TP + (FP + FN) / 2), 1 when both masks are empty.

    Args: ``pred``, ``label`` 3D binary ``(H, W, D)`` (foreground > 0.5). Returns (F1, TP, FP, FN).
    """
    p, g = _mask(pred), _mask(label)
    g_labels, n_g = lesion_components(g, connectivity)
    p_labels, n_p = lesion_components(p, connectivity)
    hit = np.unique(g_labels[p & g])
    tp = int((hit > 0).sum())
    fn = n_g - tp
    fp = n_p - int((np.unique(p_labels[p & g]) > 0).sum())
    if tp + fp + fn == 0:
        return 1.0, 0, 0, 0
    return tp / (tp + (fp + fn) / 2), tp, fp, fn


def lesion_scores(
    pred: NdarrayOrTensor,
    label: NdarrayOrTensor,
    spacing: Sequence[float] | None = None,
    connectivity: int = 26,
) -> dict[str, float | int | str]:
    """Every :data:`LESION_SCORES` entry of one subject, plus the voxel counts ``tp``, ``fp``, ``fn``,
    ``pred_voxels``, ``label_voxels`` (what :func:`micro_dice` pools), the lesion counts ``pred_lesions``,
    ``label_lesions``, ``lesion_tp``, ``lesion_fp``, ``lesion_fn``, and ``surface`` (``measured``, ``missed``,
    ``spurious`` or ``absent``: :func:`~common.metrics.surface_status`).

    Args:
        pred, label: binary masks ``(H, W, D)`` or ``(1, H, W, D)`` (foreground > 0.5), equal shapes.
        spacing: voxel size in mm along H, W, D (1 mm if None; the distances are then in voxels).
        connectivity: of the lesions (26: the challenge's).

    HD is the maximum of the distances from each surface voxel of one mask to the nearest surface voxel of the other,
    both directions (MONAI's ``compute_hausdorff_distance`` without percentile); ASSD the mean of those distances
    (:func:`~common.metrics.surface_distances`); the surface of a mask is its voxels with a face neighbour outside it.
    """
    p, g = _mask(pred), _mask(label)
    if p.shape != g.shape or p.ndim not in (3, 4) or (p.ndim == 4 and p.shape[0] != 1):
        raise ValueError(f"pred, label: expected equal shapes (H, W, D) or (1, H, W, D), found {p.shape}, {g.shape}")
    p, g = p.reshape(p.shape[-3:]), g.reshape(g.shape[-3:])
    spacing = tuple(float(s) for s in spacing) if spacing is not None else (1.0, 1.0, 1.0)
    tp, fp, fn = int((p & g).sum()), int((p & ~g).sum()), int((~p & g).sum())
    n_p, n_g = tp + fp, tp + fn
    f1, l_tp, l_fp, l_fn = lesion_f1(p, g, connectivity)
    count_p, count_g = lesion_components(p, connectivity)[1], lesion_components(g, connectivity)[1]
    hd = assd = math.nan
    if n_p and n_g:
        pt, gt = torch.as_tensor(p)[None, None], torch.as_tensor(g)[None, None]
        assd = float(surface_distances(pt, gt, spacing, include_background=True).assd[0, 0])
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*always_return_as_numpy.*")
            hd = float(compute_hausdorff_distance(pt, gt, include_background=True, spacing=spacing)[0, 0])
    return {
        "dice": 2 * tp / (n_p + n_g) if n_p + n_g else 1.0,
        "hd_mm": hd,
        "assd_mm": assd,
        "tpr": tp / n_g if n_g else 0.0,
        "precision": tp / n_p if n_p else 0.0,
        "lesion_f1": f1,
        "lesion_count_difference": abs(count_p - count_g),
        "volume_difference": abs(n_p - n_g),
        "volume_difference_ml": abs(n_p - n_g) * float(np.prod(spacing)) / 1000.0,
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "pred_voxels": n_p,
        "label_voxels": n_g,
        "pred_lesions": count_p,
        "label_lesions": count_g,
        "lesion_tp": l_tp,
        "lesion_fp": l_fp,
        "lesion_fn": l_fn,
        "surface": surface_status(n_p, n_g),
    }


def micro_dice(rows: Sequence[Mapping[str, object]]) -> float:
    """Dice of all subjects' voxels pooled (the paper's micro-DSC): ``2 sum(tp) / (sum(pred) + sum(label))`` over
    :func:`lesion_scores` rows; 1 when every mask is empty, NaN for no rows."""
    if not rows:
        return math.nan
    tp = sum(int(r["tp"]) for r in rows)
    total = sum(int(r["pred_voxels"]) + int(r["label_voxels"]) for r in rows)
    return 2 * tp / total if total else 1.0
