"""Instance scores against an independent brute-force implementation (every one-to-one assignment, voxel sets,
pairwise surface distances); the merge example; completeness accuracy."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from scipy.spatial.distance import cdist

from common.metrics import completeness_scores, instance_scores


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


def dice_of(a: np.ndarray, b: np.ndarray) -> float:
    return 2 * np.logical_and(a, b).sum() / (a.sum() + b.sum())


def best_assignment(pred: np.ndarray, label: np.ndarray) -> dict:
    """Every one-to-one assignment of ground-truth to predicted values (each ground truth to one prediction or
    none), searched exhaustively: the one of the largest summed Dice, pairs without overlap dropped."""
    g_values = sorted(set(label.ravel()) - {0})
    p_values = sorted(set(pred.ravel()) - {0})
    dice = {(g, p): dice_of(label == g, pred == p) for g in g_values for p in p_values}
    best, best_sum = {}, -1.0
    options = p_values + [None] * len(g_values)
    for chosen in itertools.permutations(options, len(g_values)):
        total = sum(dice[g, p] for g, p in zip(g_values, chosen) if p is not None)
        if total > best_sum + 1e-12:
            best, best_sum = {g: p for g, p in zip(g_values, chosen) if p is not None and dice[g, p] > 0}, total
    return best


def brute_force(pred: np.ndarray, label: np.ndarray, spacing, threshold: float):
    rows = []
    match = best_assignment(pred, label)
    for g in sorted(set(label.ravel()) - {0}):
        if g not in match:
            rows.append((g, 0.0, np.nan))
            continue
        gm, pm = label == g, pred == match[g]
        a, b = surface(pm) * spacing, surface(gm) * spacing
        d = cdist(a, b)
        assd = np.concatenate([d.min(1), d.min(0)]).mean()
        rows.append((g, dice_of(gm, pm), assd))
    fp = len(set(pred.ravel()) - {0}) - sum(r[1] > threshold for r in rows)
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


def random_instances(rng: np.random.Generator, n: int, shape=(8, 8, 8)) -> np.ndarray:
    out = np.zeros(shape, dtype=np.int32)
    for value in range(1, n + 1):
        lo = rng.integers(0, 5, size=3)
        size = rng.integers(2, 5, size=3)
        out[tuple(slice(a, a + b) for a, b in zip(lo, size))] = value
    return out


@pytest.mark.parametrize("seed", range(12))
def test_matching_is_the_best_one_to_one_assignment(seed):
    """Small random cases (merges, splits, overlaps): the summed Dice of the pairs is the exhaustive search's
    optimum, and no prediction is matched twice."""
    rng = np.random.default_rng(seed)
    label, pred = random_instances(rng, int(rng.integers(1, 5))), random_instances(rng, int(rng.integers(1, 5)))
    rows, summary = instance_scores(pred, label)
    best = best_assignment(pred, label)
    expected = sum(dice_of(label == g, pred == p) for g, p in best.items())
    assert sum(r["dice"] for r in rows) == pytest.approx(expected)
    matched = [r["matched"] for r in rows if r["matched"] is not None]
    assert len(matched) == len(set(matched)) == len(best)
    assert summary["missed"] == len(rows) - len(best)
    assert summary["false_positives"] == summary["predicted"] - sum(r["identified"] for r in rows)


def test_a_merged_prediction_counts_for_one_vertebra():
    """Two ground-truth vertebrae, one prediction covering both: one matched (Dice 2*8 / (8 + 16) ~ 0.667 > 0.5),
    the other Dice 0 and missed (best-overlap matching scored 0.667 for both)."""
    label = np.zeros((4, 4, 8), dtype=int)
    label[1:3, 1:3, 0:2], label[1:3, 1:3, 4:6] = 1, 2
    pred = np.zeros_like(label)
    pred[label > 0] = 7
    rows, summary = instance_scores(pred, label)
    assert sorted(r["dice"] for r in rows) == [0.0, pytest.approx(2 / 3)]
    assert [r["matched"] for r in rows].count(7) == 1 and [r["identified"] for r in rows].count(True) == 1
    assert summary["missed"] == 1 and summary["identification_rate"] == 0.5 and summary["false_positives"] == 0


def test_completeness_accuracy_mirrors_the_training_label():
    """Vertebra 1 fully inside its instance's patch, vertebra 2 half outside (complete_true False); the head says
    complete for both: one of two right. An unmatched instance is not scored."""
    label = np.zeros((8, 8, 16), dtype=int)
    label[2:6, 2:6, 1:5], label[2:6, 2:6, 9:13] = 1, 2
    pred = label.copy()
    pred[0, 0, 15] = 3
    rows, _ = instance_scores(pred, label)
    instances = [
        {"label": 1, "origin": [0, 0, 0], "complete": True},
        {"label": 2, "origin": [0, 0, 11], "complete": True},
        {"label": 3, "origin": [0, 0, 8], "complete": False},
    ]
    out, summary = completeness_scores(label, rows, instances, (8, 8, 8))
    assert [r["complete_true"] for r in out] == [True, False, None]
    assert [r["correct"] for r in out] == [True, False, None]
    assert summary == {"completeness_accuracy": 0.5, "completeness_scored": 2}
