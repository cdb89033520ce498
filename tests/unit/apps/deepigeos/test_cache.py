"""RefinementCache: the minimum of maps computed apart against the map of all seeds at once; refine_clicks with and
without a cache over successive clicks; maps computed for new clicks only; recomputed for another box, image or
setting and when a click is withdrawn; the preprocessing made once per image."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from common.apps.deepigeos import RefinementCache, brain_box, refine_clicks, refinement_box
from common.networks.blocks import CRFNet
from common.networks.nets import rnet
from common.transforms import clicks_to_seeds, geodesic_map
from tests.unit.apps.deepigeos.test_interactive import SMALL, Recorder


def noisy_case() -> tuple[torch.Tensor, list[tuple[int, tuple[int, ...]]]]:
    """A noisy 40x36x24 volume with a brighter half and three clicks per channel: (channel, voxel) pairs."""
    rng = np.random.default_rng(0)
    shape = (40, 36, 24)
    image = rng.normal(0, 1, shape).astype(np.float32) + 2.0 * (np.indices(shape)[0] > 20)
    clicks = [(1, tuple(int(v) for v in rng.integers(0, shape))) for _ in range(3)]
    clicks += [(0, tuple(int(v) for v in rng.integers(0, shape))) for _ in range(3)]
    return torch.from_numpy(image)[None], clicks


def flair_case() -> tuple[MetaTensor, torch.Tensor, list[tuple[int, list[int]]]]:
    """A FLAIR-like 40x40x30 volume as loaded (noisy "brain" inside zeros, a brighter tumour), an automatic label
    that misses the tumour's last slices, and five clicks (channel, voxel) of one user: the fourth widens the
    refinement box, the second, third and fifth fall inside the box of the clicks before."""
    rng = np.random.default_rng(0)
    image = np.zeros((40, 40, 30), np.float32)
    image[3:-3, 3:-3, 2:-2] = rng.normal(350, 60, (34, 34, 26))
    image[13:26, 13:26, 10:20] += 150
    label = np.zeros(image.shape, np.uint8)
    label[13:23, 13:26, 10:20] = 1
    clicks = [(1, [24, 19, 15]), (0, [14, 14, 11]), (1, [23, 15, 12]), (0, [10, 28, 13]), (1, [24, 24, 18])]
    return MetaTensor(torch.from_numpy(image)[None]), torch.from_numpy(label), clicks


def seed_maps(shape: tuple[int, ...], clicks: list[tuple[int, tuple[int, ...]]]) -> torch.Tensor:
    seeds = torch.zeros(2, *shape)
    for channel, point in clicks:
        seeds[(channel, *point)] = 1
    return seeds


def combined(
    image: torch.Tensor, clicks: list[tuple[int, tuple[int, ...]]], tolerance: float = 1e-3, scale: float = 1.0
) -> torch.Tensor:
    """Each click's map on its own, then the minimum per channel (all ones, infinitely far, without a click)."""
    shape = tuple(image.shape[1:])
    maps = [
        [
            geodesic_map(image, seed_maps(shape, [(0, p)])[:1], tolerance=tolerance, scale=scale)[0]
            for c, p in clicks
            if c == k
        ]
        for k in range(2)
    ]
    return torch.stack([torch.stack(m).amin(0) if m else torch.ones(shape) for m in maps])  # no click: all ones


def test_combined_maps_equal_the_joint_maps_at_the_fixed_point_and_within_the_stopping_error() -> None:
    """At the exact fixed point (``tolerance=0``) the minimum of the per-click maps is the map of all seeds, bit for
    bit. With the default stopping rule both are upper bounds of the exact map, and they differ by no more than the
    map of all seeds already differs from the exact one (the error the uncached step carries): here 0.017 on the
    ``[0, 1]`` scale, where the combined map is within 0.005 of the exact one."""
    image, clicks = noisy_case()
    joint_exact = geodesic_map(image, seed_maps(tuple(image.shape[1:]), clicks), tolerance=0)
    assert torch.equal(combined(image, clicks, 0), joint_exact)
    joint = geodesic_map(image, seed_maps(tuple(image.shape[1:]), clicks))
    comb = combined(image, clicks, 1e-3)
    stopping_error = float((joint - joint_exact).abs().max())
    difference = float((comb - joint).abs().max())
    assert 0 < difference <= stopping_error + 1e-6
    assert (comb >= joint_exact - 1e-6).all()  # an upper bound of the distance, as the uncached map


class CountingMaps:
    """Stands in for ``geodesic_map`` in the cache module: runs it and keeps the seed voxels of every call."""

    def __init__(self) -> None:
        self.calls: list[list[set[tuple[int, ...]]]] = []

    def __call__(self, image: torch.Tensor, seeds: torch.Tensor, **kwargs: object) -> torch.Tensor:
        self.calls.append([set(map(tuple, s.nonzero().tolist())) for s in seeds])
        return geodesic_map(image, seeds, **kwargs)


def test_maps_are_computed_for_new_clicks_only_and_again_when_box_image_or_settings_change(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    image, clicks = noisy_case()
    shape = tuple(image.shape[1:])
    counting = CountingMaps()
    monkeypatch.setattr("common.apps.deepigeos.cache.geodesic_map", counting)
    cache = RefinementCache()
    box = (slice(2, 38), slice(1, 35), slice(0, 24))
    fg, bg = [p for c, p in clicks if c == 1], [p for c, p in clicks if c == 0]

    def in_box(*points: tuple[int, ...]) -> set[tuple[int, ...]]:
        return {tuple(int(v) - s.start for v, s in zip(p, box)) for p in points}

    def step(points: list[tuple[int, tuple[int, ...]]], on: torch.Tensor = image, scale: float = 1.0) -> torch.Tensor:
        maps = cache.geodesic_maps(on, seed_maps(shape, points), box, scale=scale)
        expected = combined(on[(slice(None), *box)], [(c, *in_box(p)) for c, p in points], scale=scale)
        assert torch.equal(maps, expected)  # each click's map on its own (here), combined as the clicks come
        return maps

    step([(1, fg[0])])
    step([(1, fg[0]), (0, bg[0])])
    step([(1, fg[0]), (0, bg[0]), (1, fg[1])])
    assert counting.calls == [[set(), in_box(fg[0])], [in_box(bg[0]), set()], [set(), in_box(fg[1])]]
    same = step([(1, fg[1]), (0, bg[0]), (1, fg[0])])  # the same clicks again, in another order: nothing runs
    assert len(counting.calls) == 3 and same.shape == (2, 36, 34, 24)
    step([(1, fg[0]), (0, bg[0])])  # a click withdrawn: its channel again from all its clicks, the other kept
    assert counting.calls[3] == [set(), in_box(fg[0])]
    step([(1, fg[0]), (0, bg[0])], image.clone())  # another image object
    step([(1, fg[0]), (0, bg[0])], image.clone(), scale=2.0)  # another setting
    assert counting.calls[4] == counting.calls[5] == [in_box(bg[0]), in_box(fg[0])]
    box = (slice(0, 40), slice(1, 35), slice(0, 24))  # another box: all maps computed again, as without a cache
    again = cache.geodesic_maps(image, seed_maps(shape, [(1, fg[0]), (0, bg[0])]), box)
    assert counting.calls[6] == [in_box(bg[0]), in_box(fg[0])]
    joint = geodesic_map(image[(slice(None), *box)], seed_maps(shape, [(1, fg[0]), (0, bg[0])])[(slice(None), *box)])
    assert torch.equal(again, joint)


def test_refine_clicks_with_a_cache_equals_without_within_the_stopping_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """Five clicks of one user, the automatic label kept (click 4 widens the box, clicks 2, 3 and 5 fall inside it):
    R-Net gets the same image and label channels, and maps within the stopping rule's error of those computed at
    once (how far these lie from the exact maps of the same box); the labels are the same; the brain crop is found
    once."""
    torch.manual_seed(0)
    net, crf = rnet(3, **SMALL).eval(), CRFNet(3, 2, 1, window=3, iterations=2).eval()
    image, label, sequence = flair_case()
    crops: list[tuple[slice, ...]] = []
    monkeypatch.setattr(
        "common.apps.deepigeos.interactive.brain_box", lambda *a: crops.append(brain_box(*a)) or crops[-1]
    )
    counting = CountingMaps()
    monkeypatch.setattr("common.apps.deepigeos.cache.geodesic_map", counting)
    cache, seen, reference = RefinementCache(), Recorder(), Recorder()
    crop = brain_box(image, 2)
    origin = np.array([s.start for s in crop])
    size = tuple(s.stop - s.start for s in crop)
    differences = []
    for k in range(1, len(sequence) + 1):
        fg = [p for c, p in sequence[:k] if c == 1]
        bg = [p for c, p in sequence[:k] if c == 0]
        with_cache = refine_clicks(image, label, fg, bg, net, crf, brain_margin=2, margin=4, cache=cache)
        assert torch.equal(with_cache, refine_clicks(image, label, fg, bg, net, crf, brain_margin=2, margin=4))
        refine_clicks(image, label, fg, bg, seen, brain_margin=2, margin=4, cache=cache)
        refine_clicks(image, label, fg, bg, reference, brain_margin=2, margin=4)
        seeds = clicks_to_seeds(np.array(fg) - origin, np.array(bg).reshape(-1, 3) - origin, size)
        box = refinement_box(label[crop], seeds, 4)
        exact = geodesic_map(reference.inputs[-1][0, :1], seeds[(slice(None), *box)], tolerance=0)
        stopping_error = float((reference.inputs[-1][0, 2:] - exact).abs().max())
        differences.append(float((seen.inputs[-1][0, 2:] - reference.inputs[-1][0, 2:]).abs().max()))
        assert torch.equal(seen.inputs[-1][0, :2], reference.inputs[-1][0, :2])
        assert differences[-1] <= stopping_error + 1e-6
    assert [len(c) for call in counting.calls for c in call] == [0, 1, 1, 0, 0, 1, 2, 2, 0, 1]  # clicks per map run
    assert max(differences) > 0  # maps computed apart were combined
    assert len(crops) == 1 + 2 * len(sequence)  # once with the cache, on every call without


def test_preprocessed_once_per_image_object_and_settings_and_the_bytes_kept() -> None:
    cache, made = RefinementCache(), []
    image = torch.zeros(1, 4, 4)

    def preprocess() -> tuple[tuple[slice, ...], torch.Tensor]:
        made.append(1)
        return (slice(0, 4), slice(1, 3)), torch.full((1, 4, 2), float(len(made)))

    assert cache.nbytes == 0
    assert cache.preprocessed(image, (0, -5.0), preprocess)[1][0, 0, 0] == 1
    assert cache.preprocessed(image, (0, -5.0), preprocess)[1][0, 0, 0] == 1
    assert cache.preprocessed(image, (1, -5.0), preprocess)[1][0, 0, 0] == 2
    assert cache.preprocessed(image.clone(), (1, -5.0), preprocess)[1][0, 0, 0] == 3  # equal values, another object
    assert cache.nbytes == 8 * 4
    seeds = torch.zeros(2, 4, 4)
    seeds[1, 2, 2] = 1
    cache.geodesic_maps(image, seeds, (slice(0, 4), slice(1, 4)))
    assert cache.nbytes == 8 * 4 + 2 * 12 * 4  # and two float32 maps of the 4x3 box


def test_crf_pair_weights_are_computed_once_per_box_and_give_the_same_labels() -> None:
    """The same five clicks: with a cache CRF-Net(fu)'s pair weights are computed for the first box, and when click
    4 widens it, only on the shell around the kept box (slabs with the window's context, fewer voxels than the box);
    they equal the whole box's weights bit for bit, the labels equal those computed without a cache, and the
    weights count in the kept bytes."""
    torch.manual_seed(0)
    net, crf = rnet(3, **SMALL).eval(), CRFNet(3, 2, 1, window=3, iterations=2).eval()
    for p in crf.pairwise.parameters():  # away from the zero-initialised output: weights that vary with the image
        torch.nn.init.normal_(p)
    image, label, sequence = flair_case()
    runs: list[int] = []
    pair_weights = crf.pair_weights
    crf.pair_weights = lambda f: runs.append(f.shape[2:].numel()) or pair_weights(f)  # type: ignore[method-assign]
    cache, steps, boxes = RefinementCache(), [], []
    for k in range(1, len(sequence) + 1):
        fg = [p for c, p in sequence[:k] if c == 1]
        bg = [p for c, p in sequence[:k] if c == 0]
        with_cache = refine_clicks(image, label, fg, bg, net, crf, brain_margin=2, margin=4, cache=cache)
        steps.append(runs[:])
        boxes.append(cache._crf_key)
        assert torch.equal(with_cache, refine_clicks(image, label, fg, bg, net, crf, brain_margin=2, margin=4))
        runs.clear()  # count the cached calls only
    box_voxels = [int(np.prod([e - s for s, e in b])) for b in boxes]
    assert steps[0] == [box_voxels[0]] and steps[1] == steps[2] == steps[4] == []
    assert boxes[3] != boxes[2] and len(steps[3]) > 1 and sum(steps[3]) < box_voxels[3]  # the shell only
    fresh = RefinementCache()
    refine_clicks(image, label, fg, bg, net, crf, brain_margin=2, margin=4, cache=fresh)
    assert fresh._crf_key == cache._crf_key
    assert all(torch.equal(a, b) for a, b in zip(cache._crf_weights, fresh._crf_weights))
    maps_and_crop = cache.nbytes - sum(w.element_size() * w.nelement() for w in cache._crf_weights)
    assert cache._crf_weights is not None and len(cache._crf_weights) == 26 and maps_and_crop > 0
