"""common.apps.igs.evaluation.volume_surface_distances with slices at their true positions: a subset of a volume's
slices is not stacked as if adjacent (ground truth at z = 0 and prediction at z = 16 stay 16 mm apart with slices
0, 8, 16 only), the distances of slice sets with gaps equal a brute-force point-set reference in mm, and contiguous
slices give what MONAI's distances of the stacked volume give."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.spatial.distance import cdist

from common.apps.igs.evaluation import volume_surface_distances
from common.metrics import surface_distances


def _items(keys: list[tuple[str, int]], spacing: dict[str, tuple[float, float, float]] | None) -> list[dict]:
    """Slice dicts of ``(patient, slice)`` keys, with the patient's spacing unless ``spacing`` is None."""
    return [
        {"patient": p, "phase": "", "slice": s, **({} if spacing is None else {"spacing": spacing[p]})} for p, s in keys
    ]


def _toy(depth: int = 17) -> tuple[torch.Tensor, torch.Tensor]:
    """``(depth, 8, 8)`` class maps: the ground truth a 3 x 3 square in slice 0, the prediction the same square in
    slice ``depth - 1``."""
    pred, gt = torch.zeros(depth, 8, 8, dtype=torch.uint8), torch.zeros(depth, 8, 8, dtype=torch.uint8)
    gt[0, 2:5, 2:5] = 1
    pred[-1, 2:5, 2:5] = 1
    return pred, gt


@pytest.mark.parametrize("thickness", [1.0, 2.5])
def test_a_subset_of_slices_keeps_their_distance(thickness):
    pred, gt = _toy()
    spacing = {"a": (1.0, 1.0, thickness)}
    every = volume_surface_distances(pred, gt, _items([("a", z) for z in range(17)], spacing), 2)
    kept = [0, 8, 16]
    subset = volume_surface_distances(pred[kept], gt[kept], _items([("a", z) for z in kept], spacing), 2)
    # stacked as adjacent slices, the subset gave 2 slice thicknesses (2.0 mm at 1 mm)
    for d in (every, subset):
        np.testing.assert_allclose(d.hd95, [[16 * thickness]], rtol=1e-6)
        np.testing.assert_allclose(d.assd, [[16 * thickness]], rtol=1e-6)
        assert d.unit == "mm"
    px = volume_surface_distances(pred[kept], gt[kept], _items([("a", z) for z in kept], None), 2)
    assert px.unit == "px" and px.hd95[0, 0] == pytest.approx(16.0)


def _surface_reference(mask: np.ndarray, positions: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """Surface voxels by counting face neighbours: a mask voxel with a neighbour (H, W or the next slice index) that
    is outside the mask, the image or the set of kept slices; points ``(n, 3)`` at ``(h, w, slice) * scale``."""
    kept = {int(z): k for k, z in enumerate(positions)}
    height, width = mask.shape[:2]
    points = []
    for h, w, k in zip(*np.nonzero(mask)):
        z = int(positions[k])
        in_plane = ((-1, 0), (1, 0), (0, -1), (0, 1))
        inside = [0 <= h + dh < height and 0 <= w + dw < width and mask[h + dh, w + dw, k] for dh, dw in in_plane]
        inside += [z + dz in kept and mask[h, w, kept[z + dz]] for dz in (-1, 1)]
        if not all(inside):
            points.append((h, w, z))
    return np.asarray(points, dtype=np.float64).reshape(-1, 3) * scale


def _reference(pred: np.ndarray, gt: np.ndarray, positions: np.ndarray, scale: np.ndarray) -> tuple[float, float]:
    """HD95 and ASSD of two binary ``(H, W, D)`` masks from all pairwise distances (``cdist``) of their surfaces."""
    a, b = _surface_reference(pred, positions, scale), _surface_reference(gt, positions, scale)
    pairwise = cdist(a, b)
    to_gt, to_pred = pairwise.min(1), pairwise.min(0)
    return max(np.percentile(to_gt, 95), np.percentile(to_pred, 95)), np.concatenate([to_gt, to_pred]).mean()


def _blobs(rng: np.random.Generator, depth: int) -> np.ndarray:
    """``(depth, 12, 12)`` class maps 0-2: two random boxes per slice of random classes, some slices empty."""
    maps = np.zeros((depth, 12, 12), np.int64)
    for z in range(depth):
        for _ in range(rng.integers(0, 3)):
            h, w = rng.integers(0, 10, 2)
            maps[z, h : h + rng.integers(1, 5), w : w + rng.integers(1, 5)] = rng.integers(1, 3)
    return maps


@pytest.mark.parametrize("seed", range(4))
def test_slice_sets_match_a_brute_force_reference(seed):
    rng = np.random.default_rng(seed)
    depth = 24
    volumes = {"p0": np.sort(rng.choice(depth, 7, replace=False)), "p1": np.array([0, 2, 3, 4, 9, 10, 23])}
    volumes["p2"] = np.arange(5, 13)  # contiguous
    spacing = {p: tuple(rng.uniform(0.5, 3.0, 3).tolist()) for p in volumes}
    keys = [(p, int(z)) for p, zs in volumes.items() for z in zs]
    shuffle = rng.permutation(len(keys))  # listed out of slice order
    keys = [keys[i] for i in shuffle]
    maps = {p: (_blobs(rng, depth), _blobs(rng, depth)) for p in volumes}
    pred = torch.as_tensor(np.stack([maps[p][0][z] for p, z in keys]))
    gt = torch.as_tensor(np.stack([maps[p][1][z] for p, z in keys]))
    ours = volume_surface_distances(pred, gt, _items(keys, spacing), 3)
    assert np.isfinite(ours.hd95).sum() >= 4  # most (volume, class) pairs measured
    for v, (p, zs) in enumerate(sorted(volumes.items())):
        for c in (1, 2):
            a, b = maps[p][0][zs].transpose(1, 2, 0) == c, maps[p][1][zs].transpose(1, 2, 0) == c
            assert ours.pred_empty[v, c - 1] == (not a.any()) and ours.label_empty[v, c - 1] == (not b.any())
            if not (a.any() and b.any()):
                assert np.isnan(ours.hd95[v, c - 1]) and np.isnan(ours.assd[v, c - 1])
                continue
            hd95, assd = _reference(a, b, zs, np.asarray(spacing[p]))
            assert ours.hd95[v, c - 1] == pytest.approx(hd95, rel=1e-6, abs=1e-6)
            assert ours.assd[v, c - 1] == pytest.approx(assd, rel=1e-6, abs=1e-6)


def test_contiguous_slices_give_the_distances_of_the_stacked_volume():
    rng = np.random.default_rng(7)
    pred, gt = (torch.as_tensor(_blobs(rng, 6)) for _ in range(2))
    numbers = [7, 5, 9, 6, 8, 10]  # slices 5-10 out of order
    items = _items([("a", z) for z in numbers], {"a": (0.9, 0.9, 4.0)})
    order = np.argsort(numbers)
    stacked = [x[order].permute(1, 2, 0)[None, None] for x in (pred, gt)]
    ours, monai = volume_surface_distances(pred, gt, items, 3), surface_distances(*stacked, (0.9, 0.9, 4.0), 3)
    for field in ("hd95", "assd", "pred_empty", "label_empty"):
        np.testing.assert_array_equal(getattr(ours, field), getattr(monai, field))


def test_bad_slice_sets():
    pred, gt = _toy(3)
    items = _items([("a", z) for z in (0, 8, 16)], {"a": (1, 1, 1)})
    with pytest.raises(ValueError, match="items: expected 'slice' .* in every slice dict, found it in 2 of 3"):
        volume_surface_distances(pred, gt, [{"patient": "a", "phase": "", "spacing": (1, 1, 1)}, *items[1:]], 2)
    with pytest.raises(ValueError, match=r"label: expected integer labels in \[0, 2\), found values in \[0.0, 2.0\]"):
        volume_surface_distances(pred, gt * 2, items, 2)
    with pytest.raises(ValueError, match=r"spacing: expected 3 positive sizes .*, found \[1.0, 1.0\]"):
        volume_surface_distances(pred, gt, [{**d, "spacing": (1, 1)} for d in items], 2)
