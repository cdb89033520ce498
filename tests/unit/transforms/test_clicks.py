"""Simulated clicks: the per-region count rule, clicks inside their region, seed maps, determinism, errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import ndimage

from common.transforms import SimulateClicks, SimulateClicksd, clicks_per_region, simulate_clicks


@pytest.mark.parametrize("size, expected", [(1, 0), (29, 0), (30, 1), (100, 1), (101, 2), (250, 3), (1000, 10)])
def test_count_rule(size: int, expected: int) -> None:
    assert clicks_per_region(size) == expected == (0 if size < 30 else math.ceil(size / 100))


def constructed_2d() -> tuple[np.ndarray, np.ndarray]:
    """Ground truth and prediction whose errors are boxes of known sizes (29, 30, 101, 250 voxels)."""
    label = np.zeros((60, 61), dtype=np.uint8)
    pred = np.zeros_like(label)
    under = [np.s_[2:3, 2:31], np.s_[10:15, 2:8], np.s_[20:30, 2:27]]  # 29, 30, 250 voxels missed
    over = [np.s_[40:41, 40:59], np.s_[45:46, 40:51], np.s_[50:51, 2:31]]  # 19, 11, 29 voxels: all too small
    for box in under:
        label[box] = 1
    for box in over:
        pred[box] = 1
    label[33:39, 40:50] = pred[33:39, 40:50] = 1  # correct: no error
    pred[33:39, 50:51] = 1  # 6 voxels over-segmented, touching the correct region
    label[54:55, 40:61] = 1
    label[55:59, 40:60] = 1  # an under-segmented L of 21 + 80 = 101 voxels
    return label, pred


def test_counts_follow_the_rule_and_clicks_fall_inside_their_region() -> None:
    label, pred = constructed_2d()
    fg, bg = simulate_clicks(pred, label, np.random.RandomState(0))
    assert fg.shape == (0 + 1 + 3 + 2, 2) and bg.shape == (0, 2)  # 29 -> 0, 30 -> 1, 250 -> 3, 101 -> 2
    under = label.astype(bool) & ~pred.astype(bool)
    regions, _ = ndimage.label(under, structure=np.ones((3, 3)))
    assert under[tuple(fg.T)].all()
    per_region = np.bincount(regions[tuple(fg.T)], minlength=regions.max() + 1)[1:]
    sizes = np.bincount(regions.ravel())[1:]
    assert per_region.tolist() == [clicks_per_region(int(s)) for s in sizes]
    assert len({tuple(p) for p in fg}) == len(fg)  # distinct voxels


def test_background_clicks_come_from_over_segmentation_3d() -> None:
    label = np.zeros((12, 12, 12), dtype=np.uint8)
    pred = np.zeros_like(label)
    pred[1:6, 1:6, 1:9] = 1  # 200 voxels over-segmented -> 2 background clicks
    label[7:11, 7:11, 7:9] = 1  # 32 voxels missed -> 1 foreground click
    fg, bg = simulate_clicks(pred, label, np.random.RandomState(3))
    assert fg.shape == (1, 3) and bg.shape == (2, 3)
    assert label[tuple(fg.T)].all() and not pred[tuple(fg.T)].any()
    assert pred[tuple(bg.T)].all() and not label[tuple(bg.T)].any()


def test_connectivity_decides_what_one_region_is() -> None:
    label = np.zeros((40, 40), dtype=np.uint8)
    label[np.arange(35), np.arange(35)] = 1  # a diagonal of 35 voxels, connected only through corners
    none = np.zeros_like(label)
    n_full = len(simulate_clicks(none, label, np.random.RandomState(0))[0])
    n_faces = len(simulate_clicks(none, label, np.random.RandomState(0), connectivity=1)[0])
    assert n_full == 1 and n_faces == 0  # one region of 35 voxels, or 35 regions of one voxel (4-connectivity)


def test_transform_pair_seed_maps_coordinates_and_determinism() -> None:
    label, pred = constructed_2d()
    op = SimulateClicks().set_random_state(7)
    seeds, fg, bg = op(torch.as_tensor(pred)[None], label[None])
    assert isinstance(seeds, torch.Tensor) and seeds.shape == (2, *label.shape) and seeds.dtype == torch.float32
    assert seeds[1].sum() == len(fg) and seeds[0].sum() == len(bg) == 0
    assert (seeds[1][tuple(torch.as_tensor(fg).T)] == 1).all()
    again = SimulateClicks().set_random_state(7)(pred[None], label[None])
    np.testing.assert_array_equal(again[1], fg)
    assert isinstance(again[0], np.ndarray)  # NumPy in, NumPy out
    other = SimulateClicks().set_random_state(8)(pred[None], label[None])[1]
    assert not np.array_equal(other, fg)
    d = SimulateClicksd(keys=("pred", "label")).set_random_state(7)({"pred": pred[None], "label": label[None]})
    assert d["clicks"] == {"foreground": fg.tolist(), "background": []}
    np.testing.assert_array_equal(d["seeds"], seeds.numpy())
    assert SimulateClicksd(allow_missing_keys=True)({"label": label[None]}).keys() == {"label"}
    with pytest.raises(KeyError):
        SimulateClicksd()({"label": label[None]})


def test_perfect_prediction_gives_no_clicks() -> None:
    label, _ = constructed_2d()
    seeds, fg, bg = SimulateClicks()(label[None], label[None])
    assert fg.shape == (0, 2) and bg.shape == (0, 2) and seeds.sum() == 0


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: SimulateClicks(min_size=0), "min_size, voxels_per_click: expected"),
        (lambda: SimulateClicks(connectivity=4), "connectivity: expected"),
        (lambda: SimulateClicksd(keys="pred"), "keys: expected 2 keys"),
    ],
)
def test_bad_arguments_fail_in_init(make, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        make()


def test_mismatched_inputs_are_reported() -> None:
    with pytest.raises(ValueError, match="pred, label: expected equal shapes"):
        SimulateClicks()(np.zeros((1, 5, 5)), np.zeros((1, 5, 6)))
