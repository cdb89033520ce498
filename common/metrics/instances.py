"""Scores of instance segmentations with one label value per object (vertebrae): ground-truth and predicted instances
matched one to one (the Hungarian algorithm on Dice, so that a prediction merging two vertebrae counts for one of them
only), Dice and ASSD of each pair, identification (Dice above a threshold), missed vertebrae and false-positive
predicted instances; and the accuracy of the completeness decisions of the accepted instances."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from monai.config import NdarrayOrTensor
from monai.utils.type_conversion import convert_to_numpy
from scipy.optimize import linear_sum_assignment

from common.metrics.surface import surface_distances

__all__ = ["IDENTIFICATION_DICE", "instance_scores", "completeness_scores"]

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

    Matching is one to one: the pairs (ground-truth value ``g``, predicted value ``p``) maximise the summed Dice
    ``2 |g & p| / (|g| + |p|)`` (:func:`scipy.optimize.linear_sum_assignment`); a pair without overlap is no match. For
    every ground-truth value ``g`` (ascending): ``dice`` of its pair (0 when unmatched: missed), ``assd`` the average
    symmetric surface distance of the pair (MONAI's, :func:`~common.metrics.surface_distances`; in mm with
    ``spacing``, NaN when unmatched) and ``identified = dice > threshold``. A prediction merging two vertebrae is
    matched to one of them; the other is missed.

    Returns ``(rows, summary)``: one row per ground-truth instance ``{"vertebra", "matched", "dice", "assd",
    "identified"}``; ``summary``: ``mean_dice`` (over ground-truth instances), ``mean_assd`` (over matched ones),
    ``identification_rate`` (identified / ground-truth instances), ``missed`` (ground-truth instances without a
    match), ``false_positives`` (predicted instances not matched to a ground-truth instance with Dice above
    ``threshold``: unmatched ones and those matched at Dice <= ``threshold``), ``predicted`` and ``ground_truth``
    counts.
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
    match: dict[int, int] = {}
    if g_values and p_values:
        gi, pj = linear_sum_assignment(dice, maximize=True)
        match = {int(i): int(j) for i, j in zip(gi, pj) if overlap[i, j] > 0}
    rows = []
    for i, v in enumerate(g_values):
        j = match.get(i)
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
    true_positives = sum(r["identified"] for r in rows)
    matched_assd = [r["assd"] for r in rows if r["matched"] is not None]
    summary = {
        "mean_dice": float(np.mean([r["dice"] for r in rows])) if rows else float("nan"),
        "mean_assd": float(np.nanmean(matched_assd)) if matched_assd else float("nan"),
        "identification_rate": float(np.mean([r["identified"] for r in rows])) if rows else float("nan"),
        "missed": len(g_values) - len(match),
        "false_positives": len(p_values) - true_positives,
        "predicted": len(p_values),
        "ground_truth": len(g_values),
    }
    return rows, summary


def completeness_scores(
    label: NdarrayOrTensor,
    rows: Sequence[Mapping],
    instances: Sequence[Mapping],
    patch_size: Sequence[int],
    complete_fraction: float = 0.98,
) -> tuple[list[dict], dict]:
    """The accuracy of the completeness decisions of the traversal's accepted ``instances`` (each ``{"label",
    "origin", "complete"}``: its value in the prediction, the origin of its final patch of ``patch_size`` voxels in the
    grid of ``label`` ``(*S)``, the completeness head's decision), against the training label's definition
    (:class:`~common.apps.iterative_fcn.InstanceSampled`): the instance's ground-truth vertebra ``g`` (the one matched
    to it in ``rows`` of :func:`instance_scores`) is complete when at least ``complete_fraction`` of ``g``'s voxels
    lie in the patch. Unmatched instances (false positives) have no ground truth and are not scored.

    Returns ``(rows, summary)``: one row per accepted instance ``{"instance", "vertebra" (None: unmatched),
    "complete", "complete_true", "correct"}`` (the last two None when unmatched); ``summary``:
    ``completeness_accuracy`` (correct / scored, NaN when none is scored) and ``completeness_scored``.
    """
    g = np.rint(convert_to_numpy(label)).astype(np.int64)
    vertebra_of = {r["matched"]: r["vertebra"] for r in rows if r["matched"] is not None}
    out = []
    for inst in instances:
        v = vertebra_of.get(int(inst["label"]))
        truth = None
        if v is not None:
            window = tuple(slice(max(int(o), 0), int(o) + int(s)) for o, s in zip(inst["origin"], patch_size))
            mask = g == v
            truth = bool(mask[window].sum() >= complete_fraction * mask.sum())
        complete = bool(inst["complete"])
        out.append(
            {
                "instance": int(inst["label"]),
                "vertebra": v,
                "complete": complete,
                "complete_true": truth,
                "correct": None if truth is None else complete == truth,
            }
        )
    scored = [r["correct"] for r in out if r["correct"] is not None]
    summary = {
        "completeness_accuracy": float(np.mean(scored)) if scored else float("nan"),
        "completeness_scored": len(scored),
    }
    return out, summary
