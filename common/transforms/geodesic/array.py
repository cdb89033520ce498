"""Geodesic distance maps of user seeds (clicks, scribbles) on an image, as DeepIGeoS feeds them to R-Net."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from monai.config import NdarrayOrTensor
from monai.data import MetaTensor
from monai.transforms import Transform
from monai.utils import TransformBackends, optional_import
from monai.utils.type_conversion import convert_to_dst_type, convert_to_tensor

__all__ = ["has_geodistk", "has_fastgeodis", "BACKENDS", "geodesic_map", "GeodesicMaps"]

geodistk, has_geodistk = optional_import("GeodisTK")


geodistk, has_geodistk = optional_import("GeodisTK")


fastgeodis, has_fastgeodis = optional_import("FastGeodis")


fastgeodis, has_fastgeodis = optional_import("FastGeodis")


BACKENDS = ("auto", "geodistk", "fastgeodis")


_FAR = 1.0e10  # distance both libraries start from outside the seeds


def _check_options(backend: str, lamb: float, iterations: int) -> None:
    if backend not in BACKENDS:
        raise ValueError(f"backend: expected one of {BACKENDS}, found {backend!r}")
    if backend == "geodistk" and not has_geodistk:
        raise ImportError("backend 'geodistk': expected the GeodisTK package, found it not installed")
    if backend == "fastgeodis" and not has_fastgeodis:
        raise ImportError("backend 'fastgeodis': expected the FastGeodis package, found it not installed")
    if not 0.0 <= lamb <= 1.0:
        raise ValueError(f"lamb: expected a value in [0, 1], found {lamb}")
    if iterations < 1:
        raise ValueError(f"iterations: expected at least 1, found {iterations}")


def _resolve_backend(backend: str, device: torch.device) -> str:
    if backend == "auto":
        return "fastgeodis" if device.type == "cuda" and has_fastgeodis else "geodistk"
    return backend


def _raw_distance(
    image: torch.Tensor, seed: torch.Tensor, spacing: Sequence[float], lamb: float, iterations: int, backend: str
) -> torch.Tensor:
    """One map: ``image`` ``(C, *S)`` float32, ``seed`` ``(*S)`` bool -> ``(*S)`` float32 on ``image.device``."""
    flat = len(spacing) == 2  # a 2D image runs as a one-slice volume: the same neighbours, and spacing honoured
    sp = [1.0, *spacing] if flat else list(spacing)
    if backend == "geodistk":
        img = image.detach().cpu().movedim(0, -1).numpy()  # (*S, C): GeodisTK's channel-last layout
        img = img[None] if flat else img
        img = np.ascontiguousarray(img[..., 0] if img.shape[-1] == 1 else img, dtype=np.float32)
        s = seed.cpu().numpy().astype(np.uint8)
        s = np.ascontiguousarray(s[None] if flat else s)
        dist = torch.from_numpy(geodistk.geodesic3d_raster_scan(img, s, sp, float(lamb), int(iterations)))
        return (dist[0] if flat else dist).to(image.device)
    img = image[None, :, None] if flat else image[None]  # (1, C, D, H, W)
    soft = (~seed).to(torch.float32)[None, None]
    soft = soft[:, :, None] if flat else soft
    dist = fastgeodis.generalised_geodesic3d(
        img.contiguous(), soft.contiguous(), sp, _FAR, float(lamb), int(iterations)
    )
    return dist[0, 0, 0] if flat else dist[0, 0]


def geodesic_map(
    image: torch.Tensor,
    seeds: torch.Tensor,
    spacing: Sequence[float] | None = None,
    lamb: float = 1.0,
    iterations: int = 2,
    backend: str = "auto",
    normalize: bool = True,
) -> torch.Tensor:
    """Geodesic distance from each seed channel, by raster scan (forward/backward passes over the 3^d neighbours).

    Args:
        image: ``(C, *S)`` with ``S`` = ``(H, W)`` or ``(H, W, D)``; the intensities enter the cost as they are,
            so normalise them first (DeepIGeoS: zero mean, unit variance).
        seeds: ``(K, *S)``, non-zero at the seeds of each channel (e.g. ``K = 2``: background, foreground clicks).
        spacing: voxel size per spatial axis, ``len(S)`` positive floats; ``None`` means 1.
        lamb: 1 = purely intensity-driven geodesic distance (DeepIGeoS), 0 = Euclidean distance.
        iterations: raster-scan iterations (each a forward and a backward sweep).
        backend: ``"geodistk"`` (CPU, the original's tool), ``"fastgeodis"`` (CPU or CUDA) or ``"auto"``
            (FastGeodis for CUDA tensors when installed, otherwise GeodisTK).
        normalize: divide each map by its maximum (values in ``[0, 1]``, the R-Net input); a channel without
            seeds is then all ones (as far as possible). With ``False`` a channel without seeds is ``1e10``.

    The two libraries define the step cost between neighbours ``p, q`` (offset ``o`` in voxels) differently:

    - GeodisTK: ``|o * spacing| / ((1 - lamb) + lamb / (|I_p - I_q| + 1e-5))``; with ``lamb = 1`` this is
      ``|o * spacing| * (|I_p - I_q| + 1e-5)`` (the intensity step weighted by the step length; L2 over channels).
    - FastGeodis: ``(1 - lamb) * |o * spacing| + lamb * |I_p - I_q|``; with ``lamb = 1`` the step length drops
      out and spacing has no effect (L1 over channels).

    Both converge to the shortest-path distance on the 3^d-neighbour graph with that cost as ``iterations`` grow.

    Returns: ``(K, *S)`` float32 on ``image.device``. Not differentiable.
    """
    _check_options(backend, lamb, iterations)
    image = convert_to_tensor(image, dtype=torch.float32, track_meta=False)
    seeds = convert_to_tensor(seeds, track_meta=False).to(image.device) != 0
    nd = image.ndim - 1
    if nd not in (2, 3) or seeds.ndim != image.ndim or seeds.shape[1:] != image.shape[1:]:
        raise ValueError(
            f"image, seeds: expected (C, *S) and (K, *S) with 2 or 3 spatial dims, found "
            f"{tuple(image.shape)} and {tuple(seeds.shape)}"
        )
    spacing = [1.0] * nd if spacing is None else [float(s) for s in spacing]
    if len(spacing) != nd or min(spacing) <= 0:
        raise ValueError(f"spacing: expected {nd} positive values, found {spacing}")
    backend = _resolve_backend(backend, image.device)
    if backend == "geodistk" and not has_geodistk:  # "auto" on CPU without GeodisTK
        raise ImportError("backend 'auto': expected the GeodisTK package for CPU tensors, found it not installed")
    maps = []
    for seed in seeds:
        if not seed.any():
            maps.append(torch.full(seed.shape, 1.0 if normalize else _FAR, device=image.device))
            continue
        dist = _raw_distance(image, seed, spacing, lamb, iterations, backend)
        maps.append(dist / dist.max().clamp_min(1e-12) if normalize else dist)
    return torch.stack(maps)


class GeodesicMaps(Transform):
    """Turn seed maps and an image into geodesic distance maps (see :func:`geodesic_map` for the cost).

    Args:
        spacing: voxel size per spatial axis; ``None`` takes it from a MetaTensor image's ``pixdim`` (else 1).
        lamb: 1 = geodesic (DeepIGeoS), 0 = Euclidean.
        iterations: raster-scan iterations.
        backend: ``"auto"``, ``"geodistk"`` or ``"fastgeodis"``.
        normalize: maps scaled to ``[0, 1]`` by their maximum; channels without seeds become ones.

    Shapes: ``img`` ``(C, H, W[, D])`` and ``seeds`` ``(K, H, W[, D])`` (non-zero at seeds) -> ``(K, H, W[, D])``
    float32 of ``img``'s type, on ``img.device``. Not differentiable.
    """

    backend = [TransformBackends.TORCH, TransformBackends.NUMPY]

    def __init__(
        self,
        spacing: Sequence[float] | None = None,
        lamb: float = 1.0,
        iterations: int = 2,
        backend: str = "auto",
        normalize: bool = True,
    ) -> None:
        _check_options(backend, lamb, iterations)
        if spacing is not None and (len(spacing) not in (2, 3) or min(spacing) <= 0):
            raise ValueError(f"spacing: expected 2 or 3 positive values, found {list(spacing)}")
        self.spacing = None if spacing is None else tuple(float(s) for s in spacing)
        self.lamb = float(lamb)
        self.iterations = int(iterations)
        self.map_backend = backend
        self.normalize = normalize

    def __call__(self, img: NdarrayOrTensor, seeds: NdarrayOrTensor) -> NdarrayOrTensor:
        spacing = self.spacing
        if spacing is None and isinstance(img, MetaTensor):
            spacing = [float(s) for s in img.pixdim[: img.ndim - 1]]
        maps = geodesic_map(
            convert_to_tensor(img, track_meta=False),
            convert_to_tensor(seeds, track_meta=False),
            spacing,
            self.lamb,
            self.iterations,
            self.map_backend,
            self.normalize,
        )
        return convert_to_dst_type(maps, img, dtype=torch.float32)[0]
