"""common.metrics.surface: HD95 and ASSD against a brute-force reference (every pair of surface voxels), anisotropic
spacing, 2D and 3D, label maps and one-hot, and the empty-mask convention."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch

from common.metrics import EMPTY_MASK_CONVENTION, surface_distances, surface_summary, surface_unit


def _surface(mask: np.ndarray) -> np.ndarray:
    """Coordinates ``(N, ndim)`` of the mask voxels with a face neighbour outside the mask (the image border counts
    as outside): the 4-/6-connected erosion edge."""
    padded = np.pad(mask, 1, constant_values=False)
    inner = padded[tuple(slice(1, -1) for _ in mask.shape)]
    edge = np.zeros_like(mask)
    for axis in range(mask.ndim):
        for shift in (-1, 1):
            neighbour = np.roll(padded, shift, axis=axis)[tuple(slice(1, -1) for _ in mask.shape)]
            edge |= inner & ~neighbour
    return np.argwhere(edge).astype(np.float64)


def _reference(pred: np.ndarray, label: np.ndarray, spacing: tuple[float, ...]) -> tuple[float, float]:
    """HD95 = max of the two directed 95th percentiles (linear interpolation); ASSD = mean of all distances of both
    directions; each distance the nearest surface voxel of the other mask, all pairs in mm."""
    a, b = _surface(pred) * spacing, _surface(label) * spacing
    pairwise = np.sqrt(((a[:, None, :] - b[None, :, :]) ** 2).sum(-1))
    ab, ba = pairwise.min(1), pairwise.min(0)
    return max(np.percentile(ab, 95), np.percentile(ba, 95)), float(np.concatenate([ab, ba]).mean())


def _blobs(shape: tuple[int, ...], seed: int, n: int = 3) -> np.ndarray:
    """A few random ellipsoids (some may touch the border), as a bool mask."""
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*[np.arange(s) for s in shape], indexing="ij"), -1).astype(np.float64)
    mask = np.zeros(shape, dtype=bool)
    for _ in range(n):
        centre = rng.uniform(0, np.array(shape))
        radii = rng.uniform(1.5, np.array(shape) / 3 + 1.5)
        mask |= (((grid - centre) / radii) ** 2).sum(-1) <= 1
    return mask


CASES = [
    ((17, 23), (0.7, 1.3)),
    ((31, 19), (1.0, 1.0)),
    ((15, 21, 7), (1.5, 1.5, 8.0)),
    ((13, 11, 9), (0.9, 2.1, 3.3)),
]


@pytest.mark.parametrize("shape, spacing", CASES)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_binary_masks_match_brute_force(shape, spacing, seed):
    pred, label = _blobs(shape, seed), _blobs(shape, seed + 100)
    hd95, assd = _reference(pred, label, spacing)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no MONAI warning leaks out for non-empty masks
        d = surface_distances(
            torch.as_tensor(pred)[None, None], torch.as_tensor(label)[None, None], spacing, None, True
        )
    assert d.unit == "mm" and d.measured.all()
    np.testing.assert_allclose(d.hd95[0, 0], hd95, rtol=1e-4)
    np.testing.assert_allclose(d.assd[0, 0], assd, rtol=1e-4)


def test_label_maps_per_class_and_per_volume_spacing():
    shape, num_classes = (19, 15, 6), 4
    rng = np.random.default_rng(7)
    spacing = np.array([[1.5, 1.5, 8.0], [0.8, 1.1, 5.0]])
    preds, labels = [], []
    for b in range(2):
        maps = []
        for seed in (b, b + 50):
            m = np.zeros(shape, dtype=np.int64)
            for c in range(1, num_classes):
                m[_blobs(shape, int(rng.integers(1000)), n=2)] = c
            maps.append(m)
        preds.append(maps[0])
        labels.append(maps[1])
    d = surface_distances(np.stack(preds)[:, None], np.stack(labels)[:, None], spacing, num_classes=num_classes)
    assert d.hd95.shape == (2, num_classes - 1)  # background dropped
    for b in range(2):
        for c in range(1, num_classes):
            hd95, assd = _reference(preds[b] == c, labels[b] == c, tuple(spacing[b]))
            np.testing.assert_allclose(d.hd95[b, c - 1], hd95, rtol=1e-4)
            np.testing.assert_allclose(d.assd[b, c - 1], assd, rtol=1e-4)
    onehot = surface_distances(
        torch.nn.functional.one_hot(torch.as_tensor(np.stack(preds)), num_classes).movedim(-1, 1),
        torch.nn.functional.one_hot(torch.as_tensor(np.stack(labels)), num_classes).movedim(-1, 1),
        spacing,
    )
    np.testing.assert_array_equal(onehot.hd95, d.hd95)


def test_no_spacing_is_one_per_voxel_in_px():
    pred, label = _blobs((14, 12, 5), 3), _blobs((14, 12, 5), 4)
    d = surface_distances(pred[None, None], label[None, None], include_background=True)
    hd95, assd = _reference(pred, label, (1.0, 1.0, 1.0))
    assert d.unit == "px" == surface_unit(None) and surface_unit((1.0, 1.0)) == "mm"
    np.testing.assert_allclose([d.hd95[0, 0], d.assd[0, 0]], [hd95, assd], rtol=1e-4)


def test_hand_computed_shifted_square():
    # a 4 x 4 square and the same square 2 rows lower, rows 0.5 mm apart: each surface has 12 voxels; in each
    # direction 4 lie on the other surface (0 mm), 4 one row from it (0.5 mm) and 4 two rows from it (1 mm). HD95 =
    # 95th percentile of (0 x4, 0.5 x4, 1 x4) = 1 mm; ASSD = (4 * 0.5 + 4 * 1) / 12 = 0.5 mm.
    label = np.zeros((12, 12), dtype=bool)
    label[2:6, 3:7] = True
    pred = np.roll(label, 2, axis=0)
    d = surface_distances(pred[None, None], label[None, None], (0.5, 1.0), include_background=True)
    assert d.hd95[0, 0] == pytest.approx(1.0) and d.assd[0, 0] == pytest.approx(0.5)
    assert _reference(pred, label, (0.5, 1.0)) == pytest.approx((1.0, 0.5))


def test_empty_masks_follow_the_convention():
    full = np.zeros((1, 3, 10, 10, 4), dtype=np.float32)
    full[:, 1, 2:6, 2:6, 1:3] = 1
    full[:, 2, 5:9, 5:9, 0:2] = 1
    full[:, 0] = 1 - full[:, 1:].sum(1)
    pred = full.copy()
    pred[:, 0] += pred[:, 1]  # class 1 missed
    pred[:, 1] = 0
    label = full.copy()
    label[:, 0] += label[:, 2]  # class 2 spurious (in the prediction only)
    label[:, 2] = 0
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # MONAI is never called on an empty mask, so it never warns
        d = surface_distances(pred, label, (1.5, 1.5, 8.0))
        both = surface_distances(np.zeros((2, 2, 6, 6)), np.zeros((2, 2, 6, 6)), (1.0, 1.0))
    assert np.isnan(d.hd95).all() and np.isnan(d.assd).all()  # never 0 or inf
    np.testing.assert_array_equal(d.missed, [[True, False]])
    np.testing.assert_array_equal(d.spurious, [[False, True]])
    assert not d.absent.any() and not d.measured.any()
    assert both.absent.all() and np.isnan(both.hd95).all()
    assert "NaN" in EMPTY_MASK_CONVENTION and "missed" in EMPTY_MASK_CONVENTION


def test_summary_means_leave_out_empty_cases_and_count_them():
    label = np.zeros((3, 2, 10, 10), dtype=np.float32)
    label[:, 1, 2:6, 2:6] = 1
    pred = label.copy()
    pred[1, 1, 2:6, 2:8] = 1  # volume 1: a wider prediction
    pred[2, 1] = 0  # volume 2: missed
    label[:, 0], pred[:, 0] = 1 - label[:, 1], 1 - pred[:, 1]
    d = surface_distances(pred, label, (1.0, 1.0))
    s = surface_summary(d)
    assert d.hd95[0, 0] == 0 and d.hd95[1, 0] > 0 and math.isnan(d.hd95[2, 0])
    assert s["hd95"][0] == pytest.approx(d.hd95[1, 0] / 2)
    assert s["measured"].tolist() == [2] and s["missed"].tolist() == [1] and s["spurious"].tolist() == [0]
    none = surface_summary(surface_distances(np.zeros((1, 2, 4, 4)), np.zeros((1, 2, 4, 4))))
    assert math.isnan(none["hd95"][0]) and none["absent"].tolist() == [1]


def test_bad_input():
    with pytest.raises(ValueError, match=r"pred, label: expected equal shapes \(B, K, H, W\[, D\]\)"):
        surface_distances(np.zeros((1, 2, 4, 4)), np.zeros((1, 2, 4, 5)))
    with pytest.raises(ValueError, match="spacing: expected 2 positive sizes"):
        surface_distances(np.zeros((1, 2, 4, 4)), np.zeros((1, 2, 4, 4)), (1.0, 1.0, 1.0))
    with pytest.raises(ValueError, match="spacing: expected 2 positive sizes"):
        surface_distances(np.zeros((1, 2, 4, 4)), np.zeros((1, 2, 4, 4)), (1.0, 0.0))
    with pytest.raises(ValueError, match=r"label: expected integer labels in \[0, 3\), found values in \[3.0, 3.0\]"):
        surface_distances(np.zeros((1, 1, 4, 4)), np.full((1, 1, 4, 4), 3), num_classes=3)


def test_matches_monai_compute_functions():
    """One edge/distance pass per class gives what MONAI's two compute_* functions give (anisotropic 3D spacing)."""
    from monai.metrics import compute_average_surface_distance, compute_hausdorff_distance

    pred, label = _blobs((24, 20, 7), seed=3), _blobs((24, 20, 7), seed=4)
    spacing = (1.3, 0.7, 4.0)
    out = surface_distances(pred[None, None], label[None, None], spacing, None, True)
    yp, yt = torch.as_tensor(pred[None, None], dtype=torch.float32), torch.as_tensor(label[None, None]).float()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        hd = compute_hausdorff_distance(yp, yt, include_background=True, percentile=95, spacing=spacing)
        asd = compute_average_surface_distance(yp, yt, include_background=True, symmetric=True, spacing=spacing)
    assert out.hd95[0, 0] == pytest.approx(float(hd[0, 0]), rel=1e-6)
    assert out.assd[0, 0] == pytest.approx(float(asd[0, 0]), rel=1e-6)
