"""Lesion scores checked against independent implementations on the same masks: scikit-learn (precision, recall),
scikit-image (connected lesions), brute-force surfaces and pairwise distances (HD, ASSD), NumPy sums (Dice, micro-DSC,
volumes)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.spatial.distance import cdist
from skimage.measure import label as sk_label
from sklearn.metrics import precision_score, recall_score

from common.metrics import lesion_f1, lesion_scores, micro_dice


def _blobs(rng: np.random.Generator, shape=(11, 12, 9), n=3) -> np.ndarray:
    m = np.zeros(shape, bool)
    for _ in range(n):
        c = rng.integers(0, shape)
        r = rng.integers(1, 3, size=3)
        m[tuple(slice(max(0, ci - ri), ci + ri + 1) for ci, ri in zip(c, r))] = True
    return m


def _surface(m: np.ndarray) -> np.ndarray:
    """Brute force: voxels of ``m`` with a face neighbour outside ``m`` or outside the image."""
    pts = []
    for idx in zip(*np.nonzero(m)):
        for axis in range(3):
            for step in (-1, 1):
                j = list(idx)
                j[axis] += step
                if not 0 <= j[axis] < m.shape[axis] or not m[tuple(j)]:
                    pts.append(idx)
                    break
            else:
                continue
            break
    return np.array(pts, dtype=float)


def _reference(p: np.ndarray, g: np.ndarray, spacing) -> dict:
    tp = int((p & g).sum())
    out = {
        "dice": 2 * tp / (p.sum() + g.sum()),
        "tpr": recall_score(g.ravel(), p.ravel(), zero_division=0),
        "precision": precision_score(g.ravel(), p.ravel(), zero_division=0),
        "volume_difference": abs(int(p.sum()) - int(g.sum())),
    }
    sp, sg = _surface(p) * spacing, _surface(g) * spacing
    d = cdist(sp, sg)
    to_g, to_p = d.min(1), d.min(0)
    out["hd_mm"] = max(to_g.max(), to_p.max())
    out["assd_mm"] = np.concatenate([to_g, to_p]).mean()
    lp, n_p = sk_label(p, connectivity=3, return_num=True)
    lg, n_g = sk_label(g, connectivity=3, return_num=True)
    tp_l = sum(bool(p[lg == k].any()) for k in range(1, n_g + 1))
    fp_l = sum(not g[lp == k].any() for k in range(1, n_p + 1))
    fn_l = n_g - tp_l
    out["lesion_f1"] = tp_l / (tp_l + (fp_l + fn_l) / 2)
    out["lesion_count_difference"] = abs(n_p - n_g)
    return out


@pytest.mark.parametrize("seed", range(6))
def test_lesion_scores_match_independent_implementations(seed):
    rng = np.random.default_rng(seed)
    g = _blobs(rng)
    p = g.copy()
    p ^= rng.random(p.shape) < 0.08  # flipped voxels: partial overlap, spurious specks, holes
    p[: 1 + seed % 3] = False  # a cut-off part
    spacing = (1.0, 1.5, 2.0 + seed % 2)
    got = lesion_scores(p, g, spacing)
    want = _reference(p, g, np.array(spacing))
    for key, value in want.items():
        assert got[key] == pytest.approx(value, rel=1e-5, abs=1e-6), key
    assert got["volume_difference_ml"] == pytest.approx(want["volume_difference"] * np.prod(spacing) / 1000)
    assert got["surface"] == "measured"


def test_lesion_f1_counts_any_overlap_as_detected_and_connectivity():
    g = np.zeros((9, 9, 9), bool)
    g[1:3, 1:3, 1:3] = True  # detected by one voxel
    g[6:8, 6:8, 6:8] = True  # missed
    p = np.zeros_like(g)
    p[2, 2, 2] = True
    p[4, 4, 4] = p[5, 5, 5] = True  # diagonal neighbours: one lesion at 26-connectivity, two at 6
    assert lesion_f1(p, g) == (pytest.approx(1 / (1 + (1 + 1) / 2)), 1, 1, 1)
    assert lesion_f1(p, g, connectivity=6)[2] == 2
    assert lesion_f1(np.zeros_like(g), np.zeros_like(g))[0] == 1.0


def test_empty_masks_and_micro_dice():
    g = np.zeros((6, 6, 6), bool)
    g[1:3, 1:3, 1:3] = True
    empty = lesion_scores(np.zeros_like(g), g)
    assert empty["dice"] == 0 and empty["tpr"] == 0 and empty["precision"] == 0
    assert math.isnan(empty["hd_mm"]) and math.isnan(empty["assd_mm"]) and empty["surface"] == "missed"
    assert lesion_scores(np.zeros_like(g), np.zeros_like(g))["dice"] == 1.0
    # micro-DSC pools voxels: a big subject weighs more than a small one (the mean of per-subject Dice does not)
    big = np.zeros((10, 10, 10), bool)
    big[1:9, 1:9, 1:9] = True
    rows = [lesion_scores(big, big), lesion_scores(np.zeros_like(g), g)]
    pooled = 2 * big.sum() / (big.sum() + big.sum() + g.sum())
    assert micro_dice(rows) == pytest.approx(pooled)
    assert np.mean([r["dice"] for r in rows]) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="equal shapes"):
        lesion_scores(g, g[1:])
