"""Geodesic maps against a brute-force Dijkstra with each library's own step cost, plus the transform pair."""

from __future__ import annotations

import heapq
import itertools

import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from common.transforms import GeodesicMaps, GeodesicMapsd, geodesic_map

SHAPES = {"2d": (9, 11), "3d": (5, 6, 7)}
SPACINGS = {"2d": (1.0, 2.5), "3d": (2.0, 1.0, 0.5)}
# Raster scans only ever relax along valid paths, so they are >= the graph's shortest path and reach it once
# enough sweeps are made; with 6 iterations these images are exact up to float32 rounding of the sums.
ITERATIONS = 6
RTOL, ATOL = 1e-4, 1e-5


def geodistk_cost(step: float, dI: float, lamb: float) -> float:
    return step / ((1.0 - lamb) + lamb / (dI + 1e-5))


def fastgeodis_cost(step: float, dI: float, lamb: float) -> float:
    return (1.0 - lamb) * step + lamb * dI


def dijkstra(image: np.ndarray, seed: np.ndarray, spacing, lamb: float, cost) -> np.ndarray:
    """Shortest paths on the 3^d-neighbour grid graph, float64."""
    dist = np.full(image.shape, np.inf)
    heap = [(0.0, idx) for idx in zip(*np.nonzero(seed))]
    for _, idx in heap:
        dist[idx] = 0.0
    offsets = [o for o in itertools.product((-1, 0, 1), repeat=image.ndim) if any(o)]
    while heap:
        d, idx = heapq.heappop(heap)
        if d > dist[idx]:
            continue
        for o in offsets:
            nb = tuple(i + k for i, k in zip(idx, o))
            if any(n < 0 or n >= s for n, s in zip(nb, image.shape)):
                continue
            step = float(np.sqrt(sum((k * s) ** 2 for k, s in zip(o, spacing))))
            nd = d + cost(step, abs(float(image[idx]) - float(image[nb])), lamb)
            if nd < dist[nb]:
                dist[nb] = nd
                heapq.heappush(heap, (nd, nb))
    return dist


def case(dims: str, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    shape = SHAPES[dims]
    image = rng.random(shape).astype(np.float32) * 2.0
    seeds = np.zeros(shape, dtype=np.uint8)
    seeds[tuple(s // 3 for s in shape)] = 1
    seeds[tuple(s - 2 for s in shape)] = 1
    return image, seeds


@pytest.mark.parametrize("dims", ["2d", "3d"])
@pytest.mark.parametrize("lamb", [1.0, 0.5])
@pytest.mark.parametrize("backend", ["geodistk", "fastgeodis"])
def test_backend_equals_dijkstra_with_its_own_cost(backend: str, dims: str, lamb: float) -> None:
    if backend == "fastgeodis":
        pytest.importorskip("FastGeodis")
    image, seeds = case(dims, seed=0 if backend == "geodistk" else 1)
    spacing = SPACINGS[dims]
    ref = dijkstra(image, seeds, spacing, lamb, geodistk_cost if backend == "geodistk" else fastgeodis_cost)
    img, seed = torch.from_numpy(image)[None], torch.from_numpy(seeds)[None]
    out = geodesic_map(img, seed, spacing, lamb, ITERATIONS, backend, normalize=False)[0].numpy()
    np.testing.assert_allclose(out, ref, rtol=RTOL, atol=ATOL)
    if backend == "geodistk":
        few = geodesic_map(img, seed, spacing, lamb, 1, backend, normalize=False)[0].numpy()
        assert (few >= ref * (1 - RTOL) - ATOL).all()  # fewer sweeps: an upper bound, never below the true distance


def test_the_two_costs_differ_on_the_same_input() -> None:
    pytest.importorskip("FastGeodis")
    image, seeds = case("2d")
    args = (torch.from_numpy(image)[None], torch.from_numpy(seeds)[None], None, 1.0, ITERATIONS)
    a = geodesic_map(*args, backend="geodistk", normalize=False)
    b = geodesic_map(*args, backend="fastgeodis", normalize=False)
    assert (a - b).abs().max() > 0.1


@pytest.mark.parametrize("backend", ["geodistk", "fastgeodis"])
@pytest.mark.parametrize("dims", ["2d", "3d"])
def test_zero_at_seeds_and_monotone_along_a_uniform_path(backend: str, dims: str) -> None:
    if backend == "fastgeodis":
        pytest.importorskip("FastGeodis")
    shape = (7, 23) if dims == "2d" else (3, 5, 23)
    image = np.zeros(shape, dtype=np.float32)
    image[..., 15:] = 3.0  # flat left part, an edge of height 3, flat right part
    seeds = np.zeros(shape, dtype=np.uint8)
    seeds[(*(s // 2 for s in shape[:-1]), 0)] = 1
    raw = geodesic_map(
        torch.from_numpy(image)[None], torch.from_numpy(seeds)[None], None, 1.0, 2, backend, normalize=False
    )[0].numpy()
    row = raw[(*(s // 2 for s in shape[:-1]), slice(None))]
    assert raw[seeds > 0].max() == 0.0
    assert (np.diff(row) >= 0).all()  # never decreases moving away from the seed
    assert row[14] < 1e-3 and row[15] >= 3.0 - 1e-4  # ~0 across the flat part, the edge costs its height
    norm = geodesic_map(torch.from_numpy(image)[None], torch.from_numpy(seeds)[None], None, 1.0, 2, backend)[0]
    assert norm[torch.from_numpy(seeds) > 0].max() == 0.0 and norm.max() == pytest.approx(1.0)


@pytest.mark.parametrize("dims", ["2d", "3d"])
def test_spacing_scales_euclidean_distance_per_axis(dims: str) -> None:
    shape = SHAPES[dims]
    spacing = SPACINGS[dims]
    seeds = np.zeros(shape, dtype=np.uint8)
    seeds[(0,) * len(shape)] = 1
    out = geodesic_map(
        torch.zeros(1, *shape), torch.from_numpy(seeds)[None], spacing, 0.0, 2, "geodistk", normalize=False
    )[0]
    for axis, s in enumerate(spacing):
        idx = [0] * len(shape)
        idx[axis] = 4
        assert out[tuple(idx)].item() == pytest.approx(4 * s, rel=1e-5)


def test_transform_pair_normalises_takes_pixdim_and_fills_empty_channels() -> None:
    image, seeds = case("3d")
    spacing = SPACINGS["3d"]
    meta_image = MetaTensor(torch.from_numpy(image)[None], affine=torch.diag(torch.tensor([*spacing, 1.0])))
    two = np.stack([seeds, np.zeros_like(seeds)])  # background seeds only; no foreground click yet
    out = GeodesicMaps(iterations=ITERATIONS)(meta_image, two)
    ref = dijkstra(image, seeds, spacing, 1.0, geodistk_cost)
    assert isinstance(out, torch.Tensor) and out.shape == (2, *image.shape) and out.dtype == torch.float32
    np.testing.assert_allclose(out[0].numpy(), ref / ref.max(), rtol=RTOL, atol=ATOL)
    assert (out[1] == 1).all()
    d = GeodesicMapsd("image", seeds_key="seeds", iterations=ITERATIONS)({"image": meta_image, "seeds": two})
    np.testing.assert_array_equal(np.asarray(d["image_geodesic"]), np.asarray(out))
    as_numpy = GeodesicMaps(spacing=spacing, iterations=ITERATIONS)(image[None], two)
    assert isinstance(as_numpy, np.ndarray)
    np.testing.assert_allclose(as_numpy, out.numpy(), rtol=1e-6)


def test_auto_uses_geodistk_on_cpu() -> None:
    image, seeds = case("2d")
    args = (torch.from_numpy(image)[None], torch.from_numpy(seeds)[None])
    torch.testing.assert_close(geodesic_map(*args), geodesic_map(*args, backend="geodistk"))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"backend": "gpu"}, "backend: expected"),
        ({"lamb": 1.5}, "lamb: expected"),
        ({"iterations": 0}, "iterations: expected"),
        ({"spacing": (1.0, -1.0)}, "spacing: expected"),
    ],
)
def test_bad_arguments_fail_in_init(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        GeodesicMaps(**kwargs)


def test_mismatched_shapes_are_reported() -> None:
    with pytest.raises(ValueError, match="image, seeds: expected"):
        geodesic_map(torch.zeros(1, 5, 5), torch.zeros(2, 5, 6))
    with pytest.raises(ValueError, match="spacing: expected 2"):
        geodesic_map(torch.zeros(1, 5, 5), torch.zeros(1, 5, 5), spacing=(1.0, 1.0, 1.0))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_auto_uses_fastgeodis_on_cuda() -> None:
    pytest.importorskip("FastGeodis")
    image, seeds = case("3d")
    args = (torch.from_numpy(image)[None].cuda(), torch.from_numpy(seeds)[None].cuda())
    out = geodesic_map(*args, iterations=ITERATIONS, normalize=False)
    assert out.is_cuda
    ref = dijkstra(image, seeds, (1.0, 1.0, 1.0), 1.0, fastgeodis_cost)
    np.testing.assert_allclose(out[0].cpu().numpy(), ref, rtol=RTOL, atol=ATOL)
