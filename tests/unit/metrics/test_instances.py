"""Instance scores against an independent brute-force implementation (voxel sets, pairwise surface distances)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.distance import cdist

from common.metrics import instance_scores


def surface(mask: np.ndarray) -> np.ndarray:
    """Voxels of ``mask`` with a face neighbour outside it or outside the image (MONAI's definition)."""
    out = []
    for v in np.argwhere(mask):
        for axis in range(3):
            for step in (-1, 1):
                n = v.copy()
                n[axis] += step
                if not (0 <= n[axis] < mask.shape[axis]) or not mask[tuple(n)]:
                    out.append(v)
                    break
            else:
                continue
            break
    return np.array(out, dtype=float)


def brute_force(pred: np.ndarray, label: np.ndarray, spacing, threshold: float):
    rows = []
    g_values = sorted(set(label.ravel()) - {0})
    p_values = sorted(set(pred.ravel()) - {0})
    for g in g_values:
        gm = label == g
        best, best_overlap = None, 0
        for p in p_values:
            overlap = int(np.logical_and(gm, pred == p).sum())
            if overlap > best_overlap:
                best, best_overlap = p, overlap
        if best is None:
            rows.append((g, 0.0, np.nan))
            continue
        pm = pred == best
        dice = 2 * best_overlap / (gm.sum() + pm.sum())
        a, b = surface(pm) * spacing, surface(gm) * spacing
        d = cdist(a, b)
        assd = np.concatenate([d.min(1), d.min(0)]).mean()
        rows.append((g, dice, assd))
    fp = 0
    for p in p_values:
        pm = pred == p
        dices = [2 * np.logical_and(pm, label == g).sum() / (pm.sum() + (label == g).sum()) for g in g_values]
        fp += int(max(dices, default=0.0) <= threshold)
    return rows, fp


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_instance_scores_match_brute_force(seed):
    rng = np.random.default_rng(seed)
    label = np.zeros((14, 12, 18), dtype=np.int32)
    pred = np.zeros_like(label)
    for i, value in enumerate((8, 9, 10, 11)):
        z = 2 + 4 * i
        label[3:9, 2:9, z : z + 3] = value
        if rng.random() < 0.8:  # found, with its box shifted a little; values of pred are its own
            dx, dz = rng.integers(-1, 2, size=2)
            pred[3 + dx : 9 + dx, 2:9, max(z + dz, 0) : z + dz + 3] = 20 + i
    pred[10:13, 9:12, 0:3] = 99  # a false positive
    spacing = np.array([1.0, 0.8, 1.5])
    rows, summary = instance_scores(pred, label, spacing, threshold=0.5)
    expected, fp = brute_force(pred, label, spacing, 0.5)
    assert [r["vertebra"] for r in rows] == [e[0] for e in expected]
    np.testing.assert_allclose([r["dice"] for r in rows], [e[1] for e in expected])
    np.testing.assert_allclose([r["assd"] for r in rows], [e[2] for e in expected], rtol=1e-5)
    assert [r["identified"] for r in rows] == [e[1] > 0.5 for e in expected]
    assert summary["false_positives"] == fp >= 1
    assert summary["identification_rate"] == np.mean([e[1] > 0.5 for e in expected])
    assert summary["mean_dice"] == pytest.approx(np.mean([e[1] for e in expected]))


def test_empty_prediction_and_shapes():
    label = np.zeros((4, 4, 4), dtype=int)
    label[1:3, 1:3, 1:3] = 5
    rows, summary = instance_scores(np.zeros_like(label), label)
    assert rows[0]["dice"] == 0 and np.isnan(rows[0]["assd"]) and summary["identification_rate"] == 0
    assert summary["false_positives"] == 0 and summary["predicted"] == 0
    with pytest.raises(ValueError, match="equal shapes"):
        instance_scores(label[:2], label)
