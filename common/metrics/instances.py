"""Scores of instance segmentations with one label value per object (vertebrae): each ground-truth instance matched to
the predicted instance that overlaps it most, Dice and ASSD of the pair, identification (Dice above a threshold) and
false-positive predicted instances."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from monai.config import NdarrayOrTensor
from monai.utils.type_conversion import convert_to_numpy

from common.metrics.surface import surface_distances

__all__ = ["IDENTIFICATION_DICE", "instance_scores"]

IDENTIFICATION_DICE = 0.5
"""A ground-truth instance counts as identified when the Dice of its matched prediction is above this value."""


def instance_scores(
    pred: NdarrayOrTensor,
    label: NdarrayOrTensor,
    spacing: Sequence[float] | None = None,
    threshold: float = IDENTIFICATION_DICE,
) -> tuple[list[dict], dict]:
    """Score the instance map ``pred`` against ``label`` (both ``(*S)`` integer maps, 0 background; the values of
    ``pred`` need not equal those of ``label``: instances are matched by overlap).

    For every ground-truth value ``g`` (ascending): the predicted instance ``p`` with the most voxels in ``g`` (none
    when no predicted voxel lies in ``g``), ``dice = 2 |g & p| / (|g| + |p|)`` (0 without a match), ``assd`` the
    average symmetric surface distance of ``g`` and ``p`` (MONAI's, :func:`~common.metrics.surface_distances`; in mm
    with ``spacing``, NaN without a match) and ``identified = dice > threshold``.

    Returns ``(rows, summary)``: one row per ground-truth instance ``{"vertebra", "matched", "dice", "assd",
    "identified"}``; ``summary``: ``mean_dice``, ``mean_assd`` (over matched instances), ``identification_rate``
    (identified / ground-truth instances), ``false_positives`` (predicted instances whose best Dice with any
    ground-truth instance is at most ``threshold``), ``predicted`` and ``ground_truth`` counts.
    """
    p = np.rint(convert_to_numpy(pred)).astype(np.int64)
    g = np.rint(convert_to_numpy(label)).astype(np.int64)
    if p.shape != g.shape:
        raise ValueError(f"pred, label: expected equal shapes, found {p.shape} and {g.shape}")
    g_values = [int(v) for v in np.unique(g) if v != 0]
    p_values = [int(v) for v in np.unique(p) if v != 0]
    # overlap[i, j] = voxels of ground-truth value i in predicted value j, from one joint histogram
    gi = np.searchsorted(g_values, g[g > 0]) if g_values else np.zeros(0, int)
    g_index = np.full(g.shape, -1)
    g_index[g > 0] = gi
    p_index = np.full(p.shape, -1)
    p_index[p > 0] = np.searchsorted(p_values, p[p > 0]) if p_values else np.zeros(0, int)
    both = (g_index >= 0) & (p_index >= 0)
    overlap = np.zeros((len(g_values), len(p_values)), dtype=np.int64)
    np.add.at(overlap, (g_index[both], p_index[both]), 1)
    g_size = np.bincount(g_index[g_index >= 0], minlength=len(g_values))
    p_size = np.bincount(p_index[p_index >= 0], minlength=len(p_values))
    dice = 2 * overlap / np.maximum(g_size[:, None] + p_size[None, :], 1)
    rows = []
    for i, v in enumerate(g_values):
        j = int(np.argmax(overlap[i])) if len(p_values) and overlap[i].max() > 0 else None
        d = float(dice[i, j]) if j is not None else 0.0
        assd = float("nan")
        if j is not None:
            pair = np.stack([(p == p_values[j]), (g == v)])[:, None, None].astype(np.float32)
            assd = float(surface_distances(pair[:1, 0], pair[1:, 0], spacing, include_background=True).assd[0, 0])
        rows.append(
            {
                "vertebra": v,
                "matched": None if j is None else p_values[j],
                "dice": d,
                "assd": assd,
                "identified": d > threshold,
            }
        )
    best = dice.max(axis=0) if len(g_values) else np.zeros(len(p_values))
    matched_assd = [r["assd"] for r in rows if r["matched"] is not None]
    summary = {
        "mean_dice": float(np.mean([r["dice"] for r in rows])) if rows else float("nan"),
        "mean_assd": float(np.nanmean(matched_assd)) if matched_assd else float("nan"),
        "identification_rate": float(np.mean([r["identified"] for r in rows])) if rows else float("nan"),
        "false_positives": int((best <= threshold).sum()),
        "predicted": len(p_values),
        "ground_truth": len(g_values),
    }
    return rows, summary
