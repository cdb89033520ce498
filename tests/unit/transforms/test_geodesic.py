"""Geodesic maps against exact Dijkstra (scipy) on the 3^d - 1 neighbour graph with each backend's step cost, the
converged default on realistic volumes, CPU = CUDA, crop-independent scaling, and the transform pair."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import scipy.sparse
import torch
from monai.data import MetaTensor
from scipy.sparse.csgraph import dijkstra

from common.transforms import GeodesicMaps, GeodesicMapsd, geodesic_map

SHAPES = {"2d": (9, 11), "3d": (5, 6, 7)}
SPACINGS = {"2d": (1.0, 2.5), "3d": (2.0, 1.0, 0.5)}
RTOL, ATOL = 1e-5, 1e-5  # float32 sums along the paths against float64


def fastgeodis_cost(step: float, diff: np.ndarray, lamb: float) -> np.ndarray:
    """The paper's integral of |grad I . u| along a step (lamb = 1): the intensity change, L1 over channels."""
    return (1.0 - lamb) * step + lamb * diff.sum(0)


def geodistk_cost(step: float, diff: np.ndarray, lamb: float) -> np.ndarray:
    return step / ((1.0 - lamb) + lamb / (np.sqrt((diff**2).sum(0)) + 1e-5))


def dijkstra_reference(image: np.ndarray, seed: np.ndarray, spacing, lamb: float, cost=fastgeodis_cost) -> np.ndarray:
    """Exact shortest paths from the seeds, float64: ``image`` ``(C, *S)``, ``seed`` ``(*S)``; each voxel is linked
    to its 3^d - 1 neighbours (26 in 3D, 8 in 2D) with ``cost(step length in spacing units, |I_p - I_q|, lamb)``."""
    shape = seed.shape
    index = np.arange(seed.size).reshape(shape)
    rows, cols, weights = [], [], []
    for offset in itertools.product((-1, 0, 1), repeat=len(shape)):
        if offset <= (0,) * len(shape):  # each undirected edge once: only the offsets after zero in tuple order
            continue
        a = tuple(slice(max(0, -k), n - max(0, k)) for k, n in zip(offset, shape))
        b = tuple(slice(max(0, k), n - max(0, -k)) for k, n in zip(offset, shape))
        diff = np.abs(image[(slice(None), *a)].astype(np.float64) - image[(slice(None), *b)])
        step = math.sqrt(sum((k * s) ** 2 for k, s in zip(offset, spacing)))
        rows.append(index[a].ravel())
        cols.append(index[b].ravel())
        weights.append(np.broadcast_to(cost(step, diff, lamb), index[a].shape).ravel())
    graph = scipy.sparse.csr_matrix(
        (np.concatenate(weights), (np.concatenate(rows), np.concatenate(cols))), shape=(seed.size, seed.size)
    )
    return dijkstra(graph, directed=False, indices=np.flatnonzero(seed), min_only=True).reshape(shape)


def small_case(dims: str, seed: int = 0, channels: int = 1) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    shape = SHAPES[dims]
    image = rng.random((channels, *shape)).astype(np.float32) * 2.0
    seeds = np.zeros(shape, dtype=np.uint8)
    seeds[tuple(s // 3 for s in shape)] = 1
    seeds[tuple(s - 2 for s in shape)] = 1
    return image, seeds


def noisy_volume(shape: tuple[int, ...], seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """z-scored ``(1, *shape)`` image of a bright ellipsoid in a dimmer one with Gaussian noise; five seed voxels."""
    rng = np.random.default_rng(seed)
    grid = np.meshgrid(*[np.linspace(-1.0, 1.0, s) for s in shape], indexing="ij")
    brain = sum(g**2 for g in grid) < 0.9
    tumour = sum((g - 0.25) ** 2 / r**2 for g, r in zip(grid, (0.4, 0.3, 0.35))) < 1
    image = 1.0 * brain + 1.5 * tumour + rng.normal(0.0, 0.3, shape)
    image = (image - image[brain].mean()) / image[brain].std()
    seeds = np.zeros(shape, dtype=np.uint8)
    seeds[tuple(rng.integers(0, s, 5) for s in shape)] = 1
    return image[None].astype(np.float32), seeds


def raw(image: np.ndarray, seeds: np.ndarray, **kwargs) -> np.ndarray:
    return geodesic_map(torch.from_numpy(image), torch.from_numpy(seeds)[None], scale=None, **kwargs)[0].numpy()


@pytest.mark.parametrize("dims", ["2d", "3d"])
@pytest.mark.parametrize("lamb", [1.0, 0.5, 0.0])
@pytest.mark.parametrize("backend, cost", [("fastgeodis", fastgeodis_cost), ("geodistk", geodistk_cost)])
def test_converged_map_equals_exact_dijkstra_with_the_backends_cost(backend: str, cost, dims: str, lamb: float) -> None:
    image, seeds = small_case(dims, seed=1)
    ref = dijkstra_reference(image, seeds, SPACINGS[dims], lamb, cost)
    out = raw(image, seeds, spacing=SPACINGS[dims], lamb=lamb, tolerance=0.0, backend=backend)
    np.testing.assert_allclose(out, ref, rtol=RTOL, atol=ATOL)
    one = raw(image, seeds, spacing=SPACINGS[dims], lamb=lamb, max_iterations=1, backend=backend)
    assert (one >= ref * (1 - RTOL) - ATOL).all()  # fewer sweeps: an upper bound, never below the true distance


def test_default_cost_is_the_intensity_change_summed_over_channels() -> None:
    image, seeds = small_case("3d", seed=2, channels=2)
    ref = dijkstra_reference(image, seeds, (1.0, 1.0, 1.0), 1.0)
    out = geodesic_map(torch.from_numpy(image), torch.from_numpy(seeds)[None], tolerance=0.0, scale=None)[0]
    np.testing.assert_allclose(out.numpy(), ref, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize(
    "shape, spacing, lamb",
    [((32, 32, 16), (1.0, 1.0, 1.0), 1.0), ((48, 48, 24), (1.0, 1.0, 2.5), 1.0), ((48, 48, 24), (0.8, 0.8, 2.5), 0.5)],
)
def test_default_is_converged_on_realistic_volumes(shape: tuple[int, ...], spacing, lamb: float) -> None:
    image, seeds = noisy_volume(shape)
    ref = dijkstra_reference(image, seeds, spacing, lamb)
    out = raw(image, seeds, spacing=spacing, lamb=lamb)
    far = ref > 1e-3  # relative error away from the seeds
    rel = (out[far] - ref[far]) / ref[far]
    assert rel.min() > -1e-5  # never below the exact distance
    assert rel.mean() < 1e-3  # measured <= 0.003 %; with 2 raster-scan iterations (the old default) 1.3 and 3.3 %


def test_spacing_has_no_effect_on_the_geodesic_distance() -> None:
    image, seeds = noisy_volume((20, 18, 12), seed=3)
    iso = raw(image, seeds, tolerance=0.0)
    np.testing.assert_allclose(raw(image, seeds, spacing=(0.7, 1.0, 3.0), tolerance=0.0), iso, rtol=1e-6, atol=1e-6)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cpu_and_cuda_give_the_same_maps() -> None:
    image, seeds = noisy_volume((48, 48, 24), seed=4)
    two = np.stack([seeds, np.roll(seeds, 9, axis=0)])
    args = (torch.from_numpy(image), torch.from_numpy(two), (1.0, 1.0, 2.5))
    cpu = geodesic_map(*args)
    cuda = geodesic_map(*(a.cuda() if isinstance(a, torch.Tensor) else a for a in args))
    assert cuda.is_cuda
    torch.testing.assert_close(cuda.cpu(), cpu, rtol=0.0, atol=1e-5)
    ref = dijkstra_reference(image, seeds, (1.0, 1.0, 2.5), 1.0)
    exact = geodesic_map(
        torch.from_numpy(image).cuda(), torch.from_numpy(seeds)[None].cuda(), tolerance=0.0, scale=None
    )
    np.testing.assert_allclose(exact[0].cpu().numpy(), ref, rtol=RTOL, atol=ATOL)


def test_a_voxel_reads_the_same_whatever_the_crop() -> None:
    """Intensity rising along the first axis only: a path monotone along it is a shortest path and stays inside
    any box that holds the click and the voxel, so every crop gives the same value, ``1 - exp(-|dI| / scale)``."""
    profile = 2.0 / (1.0 + np.exp(-(np.arange(40) - 20.0) / 2.0)) + 0.02 * np.arange(40)
    image = torch.from_numpy(np.broadcast_to(profile[:, None, None], (1, 40, 30, 20)).astype(np.float32))
    seeds = torch.zeros(1, 40, 30, 20)
    click = (18, 15, 10)
    seeds[(0, *click)] = 1
    expected = 1.0 - np.exp(-np.abs(profile - profile[click[0]]) / 0.5)
    near = []  # the voxel 3 voxels from the click along each axis
    for margin in (3, 6, 12, 40):
        box = (slice(None), *(slice(max(0, c - margin), c + margin + 1) for c in click))
        crop = geodesic_map(image[box], seeds[box], scale=0.5)[0].numpy()
        rows = np.broadcast_to(expected[box[1]][:, None, None], crop.shape)
        np.testing.assert_allclose(crop, rows, rtol=1e-5, atol=1e-6)
        near.append(crop[tuple(c + 3 - b.start for c, b in zip(click, box[1:]))])
    assert near[0] > 0.1 and max(near) - min(near) < 1e-6


@pytest.mark.parametrize("backend", ["fastgeodis", "geodistk"])
def test_scaling_seeds_and_empty_channels(backend: str) -> None:
    image, seeds = noisy_volume((16, 14, 10), seed=5)
    two = np.stack([seeds, np.zeros_like(seeds)])  # background seeds only; no foreground click yet
    dist = geodesic_map(torch.from_numpy(image), torch.from_numpy(two), backend=backend, scale=None)
    maps = geodesic_map(torch.from_numpy(image), torch.from_numpy(two), backend=backend, scale=2.0)
    torch.testing.assert_close(maps[0], 1.0 - torch.exp(-dist[0] / 2.0))
    assert (maps[0][torch.from_numpy(seeds) > 0] == 0).all() and maps[0].max() < 1.0
    assert (maps[1] == 1.0).all() and (dist[1] == 1e10).all()  # no seed: as far as can be


@pytest.mark.parametrize("backend", ["fastgeodis", "geodistk"])
@pytest.mark.parametrize("dims", ["2d", "3d"])
def test_spacing_scales_euclidean_distance_per_axis(backend: str, dims: str) -> None:
    shape = SHAPES[dims]
    spacing = SPACINGS[dims]
    seeds = np.zeros(shape, dtype=np.uint8)
    seeds[(0,) * len(shape)] = 1
    out = raw(np.zeros((1, *shape), dtype=np.float32), seeds, spacing=spacing, lamb=0.0, backend=backend)
    for axis, s in enumerate(spacing):
        idx = [0] * len(shape)
        idx[axis] = 4
        assert out[tuple(idx)] == pytest.approx(4 * s, rel=1e-5)


def test_the_two_backends_define_different_distances() -> None:
    image, seeds = small_case("2d")
    a = raw(image, seeds, tolerance=0.0, backend="geodistk")
    b = raw(image, seeds, tolerance=0.0, backend="fastgeodis")
    assert np.abs(a - b).max() > 0.1


def test_transform_pair_takes_pixdim_and_keeps_the_array_type() -> None:
    image, seeds = small_case("3d")
    spacing = SPACINGS["3d"]
    meta_image = MetaTensor(torch.from_numpy(image), affine=torch.diag(torch.tensor([*spacing, 1.0])))
    two = np.stack([seeds, np.zeros_like(seeds)])
    out = GeodesicMaps(lamb=0.5, tolerance=0.0)(meta_image, two)
    ref = dijkstra_reference(image, seeds, spacing, 0.5)
    assert isinstance(out, torch.Tensor) and out.shape == (2, *seeds.shape) and out.dtype == torch.float32
    np.testing.assert_allclose(out[0].numpy(), 1.0 - np.exp(-ref), rtol=RTOL, atol=ATOL)
    assert (out[1] == 1).all()
    d = GeodesicMapsd("image", seeds_key="seeds", lamb=0.5, tolerance=0.0)({"image": meta_image, "seeds": two})
    np.testing.assert_array_equal(np.asarray(d["image_geodesic"]), np.asarray(out))
    as_numpy = GeodesicMaps(spacing=spacing, lamb=0.5, tolerance=0.0)(image, two)
    assert isinstance(as_numpy, np.ndarray)
    np.testing.assert_allclose(as_numpy, out.numpy(), rtol=1e-6)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"backend": "auto"}, "backend: expected"),
        ({"lamb": 1.5}, "lamb: expected"),
        ({"tolerance": -0.1}, "tolerance: expected"),
        ({"max_iterations": 0}, "max_iterations: expected"),
        ({"scale": 0.0}, "scale: expected"),
        ({"spacing": (1.0, -1.0)}, "spacing: expected"),
    ],
)
def test_bad_arguments_fail_in_init(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        GeodesicMaps(**kwargs)


def test_bad_inputs_are_reported() -> None:
    with pytest.raises(ValueError, match="image, seeds: expected"):
        geodesic_map(torch.zeros(1, 5, 5), torch.zeros(2, 5, 6))
    with pytest.raises(ValueError, match="spacing: expected 2"):
        geodesic_map(torch.zeros(1, 5, 5), torch.zeros(1, 5, 5), spacing=(1.0, 1.0, 1.0))
    with pytest.raises(ValueError, match="image: expected finite"):
        geodesic_map(torch.full((1, 5, 5), float("nan")), torch.ones(1, 5, 5))
