"""Simulated clicks: the per-region count rule, a 3D round on the three slices a user looks at (or per error type),
the per-round budget, clicks inside errors of their kind, seed maps, the count per round, determinism, errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import ndimage

from common.transforms import (
    SimulateClicks,
    SimulateClicksd,
    clicks_per_region,
    clicks_to_seeds,
    paint_balls,
    simulate_clicks,
)


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


def clicks_in_each_region(error: np.ndarray, clicks: np.ndarray) -> tuple[list[int], list[int]]:
    """Region sizes (8-connected, raster order) and the clicks that fell in each."""
    regions, _ = ndimage.label(error, structure=np.ones((3, 3)))
    sizes = np.bincount(regions.ravel())[1:].tolist()
    return sizes, np.bincount(regions[tuple(clicks.T)], minlength=len(sizes) + 1)[1:].tolist()


def test_2d_counts_follow_the_rule_and_clicks_fall_inside_their_region() -> None:
    label, pred = constructed_2d()
    fg, bg = simulate_clicks(pred, label, np.random.RandomState(0))
    assert fg.shape == (0 + 1 + 3 + 2, 2) and bg.shape == (0, 2)  # 29 -> 0, 30 -> 1, 250 -> 3, 101 -> 2
    under = label.astype(bool) & ~pred.astype(bool)
    assert under[tuple(fg.T)].all()
    sizes, per_region = clicks_in_each_region(under, fg)
    assert per_region == [clicks_per_region(s) for s in sizes]
    assert len({tuple(p) for p in fg}) == len(fg)  # distinct voxels


@pytest.mark.parametrize(
    "budget, expected", [(4, [0, 1, 2, 1]), (3, [0, 1, 1, 1]), (2, [0, 0, 1, 1]), (1, [0, 0, 1, 0])]
)
def test_budget_goes_to_the_largest_regions_first(budget: int, expected: list[int]) -> None:
    label, pred = constructed_2d()  # the rule asks for 0, 1, 3, 2 clicks in regions of 29, 30, 250, 101 voxels
    fg, bg = simulate_clicks(pred, label, np.random.RandomState(0), max_clicks=budget)
    assert len(fg) + len(bg) == budget
    assert clicks_in_each_region(label.astype(bool) & ~pred.astype(bool), fg)[1] == expected


def test_3d_round_uses_the_slice_with_the_most_errors_along_each_axis() -> None:
    label = np.zeros((20, 22, 24), dtype=np.uint8)
    pred = np.zeros_like(label)
    label[2:12, 3:9, 4:10] = 1  # missed: 36 voxels in each axis-0 slice, 60 per axis-1 and per axis-2 slice
    pred[14:18, 12:20, 15:22] = 1  # false: 56 per axis-0 slice, 28 per axis-1 slice, 32 per axis-2 slice
    fg, bg = simulate_clicks(pred, label, np.random.RandomState(0), max_clicks=None)
    # slices x = 14 (an over-segmented region of 8 x 7), y = 3 and z = 4 (under-segmented regions of 10 x 6)
    assert bg.shape == (1, 3) and bg[0, 0] == 14 and pred[tuple(bg.T)].all() and not label[tuple(bg.T)].any()
    assert fg.shape == (2, 3) and fg[0, 1] == 3 and fg[1, 2] == 4
    assert label[tuple(fg.T)].all() and not pred[tuple(fg.T)].any()


@pytest.mark.parametrize("slice_choice", ["all_errors", "per_error_type"])
def test_3d_slices_chosen_on_all_errors_or_per_error_type(slice_choice: str) -> None:
    """All errors together: three slices (x 14, y 3, z 4). Per error type (the re-implementation): the missed voxels
    on their own most-missed slices (x 2, y 3, z 4), the false ones on theirs (x 14, y 12, z 15)."""
    label = np.zeros((20, 22, 24), dtype=np.uint8)
    pred = np.zeros_like(label)
    label[2:12, 3:9, 4:10] = 1  # missed: 36 voxels in each axis-0 slice, 60 per axis-1 and per axis-2 slice
    pred[14:18, 12:20, 15:22] = 1  # false: 56 per axis-0 slice, 28 per axis-1 slice, 32 per axis-2 slice
    fg, bg = simulate_clicks(pred, label, np.random.RandomState(0), max_clicks=None, slice_choice=slice_choice)
    under, over = label.astype(bool) & ~pred.astype(bool), pred.astype(bool) & ~label.astype(bool)
    assert under[tuple(fg.T)].all() and over[tuple(bg.T)].all()
    if slice_choice == "all_errors":
        fg_slices, bg_slices = [(1, 3), (2, 4)], [(0, 14)]  # regions of 60, 60 (under) and 56 pixels (over)
    else:
        fg_slices, bg_slices = [(0, 2), (1, 3), (2, 4)], [(0, 14), (2, 15)]  # 36, 60, 60 and 56, 32 (28 < 30: none)
    for clicks, slices in ((fg, fg_slices), (bg, bg_slices)):
        assert len(clicks) == len(slices)  # one region of at least 30 pixels per slice: one click each
        assert all(any(p[a] == s for a, s in slices) for p in clicks)  # every click on one of those slices
        assert all(any(p[a] == s for p in clicks) for a, s in slices)  # every slice clicked
    default = simulate_clicks(pred, label, np.random.RandomState(0), max_clicks=None)
    if slice_choice == "all_errors":  # the default, unchanged
        np.testing.assert_array_equal(default[0], fg)
        np.testing.assert_array_equal(default[1], bg)
    with pytest.raises(ValueError, match=r"slice_choice: expected one of \['all_errors', 'per_error_type'\]"):
        simulate_clicks(pred, label, np.random.RandomState(0), slice_choice="per_kind")


def tumour_case(diameter: int, shape: tuple[int, int, int] = (128, 128, 96)) -> tuple[np.ndarray, np.ndarray]:
    """Ground truth: an ellipsoid ``diameter`` voxels across (first axis); prediction: misses the cap beyond half its
    radius and leaks into a ball beside it (a P-Net-like result)."""
    grid = np.meshgrid(*[np.arange(s) - s / 2 for s in shape], indexing="ij")
    radii = (diameter / 2, 0.85 * diameter / 2, 0.7 * diameter / 2)
    truth = sum(g**2 / r**2 for g, r in zip(grid, radii)) < 1
    pred = truth & (grid[0] < 0.5 * radii[0])
    leak = (0.0, radii[1] + 0.25 * radii[0], 0.0)
    pred |= sum((g - c) ** 2 for g, c in zip(grid, leak)) < (0.4 * radii[0]) ** 2
    return pred, truth


@pytest.mark.parametrize("diameter", [30, 60, 90])
def test_a_3d_round_is_a_few_clicks_on_three_slices_inside_errors_of_their_kind(diameter: int) -> None:
    pred, truth = tumour_case(diameter)
    under, over = truth & ~pred, pred & ~truth
    fg, bg = simulate_clicks(pred, truth, np.random.RandomState(0))  # 3D regions gave 14+9, 112+67, 355+220
    assert 2 <= len(fg) + len(bg) <= 10 and len(fg) and len(bg)  # both kinds of error clicked, within the budget
    assert under[tuple(fg.T)].all() and over[tuple(bg.T)].all()
    free_fg, free_bg = simulate_clicks(pred, truth, np.random.RandomState(0), max_clicks=None)
    errors = under | over
    slices = [errors.sum(axis=tuple(b for b in range(3) if b != a)).argmax() for a in range(3)]
    for clicks in (fg, bg, free_fg, free_bg):
        assert all(any(p[a] == s for a, s in enumerate(slices)) for p in clicks)  # each on one of the three slices
    wanted = 0  # without a budget: the rule over the 2D regions of those slices
    for a, s in enumerate(slices):
        for error in (under, over):
            sizes, _ = clicks_in_each_region(np.take(error, s, axis=a), np.zeros((0, 2), dtype=np.int64))
            wanted += sum(clicks_per_region(n) for n in sizes)
    assert len(free_fg) + len(free_bg) == wanted


def test_connectivity_decides_what_one_region_is() -> None:
    label = np.zeros((40, 40), dtype=np.uint8)
    label[np.arange(35), np.arange(35)] = 1  # a diagonal of 35 voxels, connected only through corners
    none = np.zeros_like(label)
    n_full = len(simulate_clicks(none, label, np.random.RandomState(0))[0])
    n_edges = len(simulate_clicks(none, label, np.random.RandomState(0), connectivity=1)[0])
    assert n_full == 1 and n_edges == 0  # one region of 35 voxels, or 35 regions of one voxel (4-connectivity)


def test_transform_pair_seed_maps_count_and_determinism() -> None:
    pred, truth = tumour_case(40, shape=(64, 64, 48))
    op = SimulateClicks(max_clicks=6).set_random_state(7)
    seeds, fg, bg = op(torch.as_tensor(pred)[None], truth[None])
    assert isinstance(seeds, torch.Tensor) and seeds.shape == (2, *truth.shape) and seeds.dtype == torch.float32
    assert seeds[1].sum() == len(fg) and seeds[0].sum() == len(bg) and len(fg) + len(bg) == 6
    assert (seeds[1][tuple(torch.as_tensor(fg).T)] == 1).all() and (seeds[0][tuple(torch.as_tensor(bg).T)] == 1).all()
    again = SimulateClicks(max_clicks=6).set_random_state(7)(pred[None], truth[None])
    np.testing.assert_array_equal(again[1], fg)
    assert isinstance(again[0], np.ndarray)  # NumPy in, NumPy out
    other = SimulateClicks(max_clicks=6).set_random_state(8)(pred[None], truth[None])[1]
    assert not np.array_equal(other, fg)
    twin = SimulateClicksd(keys=("pred", "label"), max_clicks=6).set_random_state(7)
    d = twin({"pred": pred[None], "label": truth[None]})
    assert d["clicks"] == {"foreground": fg.tolist(), "background": bg.tolist()} and d["clicks_per_round"] == 6
    np.testing.assert_array_equal(d["seeds"], seeds.numpy())
    second = twin({"pred": pred[None], "label": truth[None]})  # one draw per sample: the next sample draws anew
    assert second["clicks"] != d["clicks"] and second["seeds"][1].sum() == len(second["clicks"]["foreground"])
    assert SimulateClicksd(allow_missing_keys=True)({"label": truth[None]}).keys() == {"label"}
    with pytest.raises(KeyError):
        SimulateClicksd()({"label": truth[None]})


def test_perfect_prediction_gives_no_clicks() -> None:
    pred, truth = tumour_case(30, shape=(40, 40, 32))
    seeds, fg, bg = SimulateClicks()(truth[None], truth[None])
    assert fg.shape == (0, 3) and bg.shape == (0, 3) and seeds.sum() == 0
    assert SimulateClicksd(count_key="n")({"pred": truth[None], "label": truth[None]})["n"] == 0


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: SimulateClicks(min_size=0), "min_size, voxels_per_click: expected"),
        (lambda: SimulateClicks(connectivity=3), "connectivity: expected"),
        (lambda: SimulateClicks(max_clicks=0), "max_clicks: expected"),
        (lambda: SimulateClicksd(slice_choice="both"), "slice_choice: expected"),
        (lambda: SimulateClicksd(keys="pred"), "keys: expected 2 keys"),
    ],
)
def test_bad_arguments_fail_in_init(make, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        make()


def test_mismatched_inputs_are_reported() -> None:
    with pytest.raises(ValueError, match="pred, label: expected equal shapes"):
        SimulateClicks()(np.zeros((1, 5, 5)), np.zeros((1, 5, 6)))
    with pytest.raises(ValueError, match="pred, label: expected equal shapes with 2 or 3 axes"):
        simulate_clicks(np.zeros((2, 3, 4, 5)), np.zeros((2, 3, 4, 5)), np.random.RandomState(0))


def _balls_by_brute_force(label: np.ndarray, fg: np.ndarray, bg: np.ndarray, radius: float) -> np.ndarray:
    """Each voxel against every click by distance: the nearest click's label within ``radius`` (ties background)."""
    out = label.copy()
    for idx in np.ndindex(label.shape):
        d_fg = min((math.dist(idx, c) for c in fg), default=math.inf)
        d_bg = min((math.dist(idx, c) for c in bg), default=math.inf)
        if min(d_fg, d_bg) <= radius:
            out[idx] = 1 if d_fg < d_bg else 0
    return out


@pytest.mark.parametrize("radius", [0, 1, 2, 3.5])
def test_paint_balls_matches_spheres_by_distance(radius: float) -> None:
    rng = np.random.RandomState(0)
    label = (rng.rand(9, 10, 8) > 0.6).astype(np.uint8)
    fg, bg = np.array([[2, 3, 2], [6, 6, 5]]), np.array([[4, 4, 3], [8, 1, 7]])
    seeds = clicks_to_seeds(fg, bg, label.shape)
    out = paint_balls(label, seeds, radius)
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, _balls_by_brute_force(label, fg, bg, radius))
    assert all(out[tuple(c)] == 1 for c in fg) and all(out[tuple(c)] == 0 for c in bg)  # clicks keep their label
    lonely = paint_balls(torch.from_numpy(label), torch.from_numpy(clicks_to_seeds(fg, bg[:0], label.shape)), radius)
    assert isinstance(lonely, torch.Tensor)  # the label's type back; only foreground balls painted here
    np.testing.assert_array_equal(lonely.numpy(), _balls_by_brute_force(label, fg, bg[:0], radius))


def test_paint_balls_refuses_bad_inputs() -> None:
    label = np.zeros((5, 5), np.uint8)
    with pytest.raises(ValueError, match=r"seeds: expected \(2, \*S\)"):
        paint_balls(label, np.zeros((2, 4, 5)), 1)
    with pytest.raises(ValueError, match="radius: expected"):
        paint_balls(label, np.zeros((2, 5, 5)), -1)
    both = np.zeros((2, 5, 5))
    both[:, 2, 2] = 1
    with pytest.raises(ValueError, match="both background and foreground, found 1"):
        paint_balls(label, both, 1)
