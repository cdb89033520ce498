"""Simulated user clicks on segmentation errors (DeepIGeoS rule), as seed maps and click coordinates."""

from __future__ import annotations

import math

import numpy as np
import torch
from monai.config import NdarrayOrTensor
from monai.transforms import Randomizable, Transform
from monai.utils import TransformBackends
from monai.utils.type_conversion import convert_to_dst_type, convert_to_numpy
from scipy import ndimage

__all__ = ["clicks_per_region", "simulate_clicks", "clicks_to_seeds", "SimulateClicks"]


def clicks_per_region(size: int, min_size: int = 30, voxels_per_click: int = 100) -> int:
    """DeepIGeoS rule: ``0`` clicks if ``size < min_size`` else ``ceil(size / voxels_per_click)``."""
    return 0 if size < min_size else math.ceil(size / voxels_per_click)


def _region_clicks(
    error: np.ndarray, rng: np.random.RandomState, structure: np.ndarray, min_size: int, voxels_per_click: int
) -> np.ndarray:
    """Clicks ``(n, ndim)`` int64 drawn without replacement inside each connected region of ``error``."""
    labels, n_regions = ndimage.label(error, structure=structure)
    flat = labels.ravel()
    order = np.argsort(flat, kind="stable")  # voxel indices grouped by region, raster order within a region
    ends = np.cumsum(np.bincount(flat, minlength=n_regions + 1))
    picked = []
    for r in range(1, n_regions + 1):
        members = order[ends[r - 1] : ends[r]]
        n = clicks_per_region(members.size, min_size, voxels_per_click)
        if n:
            picked.append(members[rng.choice(members.size, n, replace=False)])
    if not picked:
        return np.zeros((0, error.ndim), dtype=np.int64)
    return np.stack(np.unravel_index(np.concatenate(picked), error.shape), axis=1).astype(np.int64)


def simulate_clicks(
    pred: np.ndarray,
    label: np.ndarray,
    rng: np.random.RandomState,
    min_size: int = 30,
    voxels_per_click: int = 100,
    connectivity: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Clicks a user would give on the errors of ``pred``: foreground clicks in under-segmented regions
    (``label`` and not ``pred``), background clicks in over-segmented ones (``pred`` and not ``label``).

    Args:
        pred: ``(*S)`` binary prediction (non-zero = foreground).
        label: ``(*S)`` ground truth (non-zero = foreground).
        rng: random state the clicks are drawn from (e.g. a transform's ``self.R``).
        min_size: regions smaller than this get no click (DeepIGeoS: 30).
        voxels_per_click: a region of ``Nm`` voxels gets ``ceil(Nm / voxels_per_click)`` clicks (DeepIGeoS: 100).
        connectivity: neighbourhood of the connected regions as in :func:`scipy.ndimage.generate_binary_structure`
            (1 = faces only ... ``ndim`` = all neighbours, the default).

    Returns: foreground and background clicks, each ``(n, ndim)`` int64 voxel indices, distinct voxels inside
    their region, regions in raster order of their first voxel. Equal ``rng`` states give equal clicks.
    """
    pred = np.asarray(pred) != 0
    label = np.asarray(label) != 0
    if pred.shape != label.shape:
        raise ValueError(f"pred, label: expected equal shapes, found {pred.shape} and {label.shape}")
    structure = ndimage.generate_binary_structure(pred.ndim, pred.ndim if connectivity is None else connectivity)
    fg = _region_clicks(label & ~pred, rng, structure, min_size, voxels_per_click)
    bg = _region_clicks(pred & ~label, rng, structure, min_size, voxels_per_click)
    return fg, bg


def clicks_to_seeds(foreground: np.ndarray, background: np.ndarray, spatial_shape: tuple[int, ...]) -> np.ndarray:
    """Seed maps ``(2, *spatial_shape)`` float32: channel 0 background clicks, channel 1 foreground clicks (one-hot
    of the clicked class, the layout :class:`common.networks.blocks.CRFNet` clamps and
    :func:`common.transforms.geodesic_map` reads)."""
    seeds = np.zeros((2, *spatial_shape), dtype=np.float32)
    for channel, points in ((0, background), (1, foreground)):
        if len(points):
            seeds[(channel, *np.asarray(points).T)] = 1.0
    return seeds


class SimulateClicks(Randomizable, Transform):
    """Simulate the clicks of :func:`simulate_clicks` on a prediction and return them as seed maps and coordinates.

    Args:
        min_size: regions smaller than this get no click.    voxels_per_click: voxels per click in a region.
        connectivity: 1 .. ndim (default ndim: all neighbours).

    Shapes: ``pred`` and ``label`` ``(1, *S)`` (channel-first binary maps, ``S`` of 2 or 3 axes) ->
    ``(seeds, foreground, background)``: seeds ``(2, *S)`` float32 (background, foreground; type and device of
    ``pred``), clicks ``(n, len(S))`` int64 NumPy arrays. Not differentiable. Draws come from ``self.R`` in
    :meth:`randomize` (seed with ``set_random_state``).
    """

    backend = [TransformBackends.NUMPY, TransformBackends.TORCH]

    def __init__(self, min_size: int = 30, voxels_per_click: int = 100, connectivity: int | None = None) -> None:
        if min_size < 1 or voxels_per_click < 1:
            raise ValueError(
                f"min_size, voxels_per_click: expected positive voxel counts, found {min_size}, {voxels_per_click}"
            )
        if connectivity is not None and connectivity not in (1, 2, 3):
            raise ValueError(f"connectivity: expected None, 1, 2 or 3, found {connectivity}")
        self.min_size = min_size
        self.voxels_per_click = voxels_per_click
        self.connectivity = connectivity
        self._clicks: tuple[np.ndarray, np.ndarray] | None = None

    def randomize(self, data: tuple[np.ndarray, np.ndarray]) -> None:
        """Draw the clicks for ``data = (pred, label)`` (spatial ``(*S)`` arrays) from ``self.R``."""
        pred, label = data
        self._clicks = simulate_clicks(pred, label, self.R, self.min_size, self.voxels_per_click, self.connectivity)

    def __call__(
        self, pred: NdarrayOrTensor, label: NdarrayOrTensor, randomize: bool = True
    ) -> tuple[NdarrayOrTensor, np.ndarray, np.ndarray]:
        p = convert_to_numpy(pred)
        g = convert_to_numpy(label)
        if p.shape != g.shape or p.ndim not in (3, 4) or p.shape[0] != 1:
            raise ValueError(
                f"pred, label: expected equal shapes (1, *S) with 2 or 3 spatial axes, found {p.shape} "
                f"and {g.shape}"
            )
        if randomize or self._clicks is None:
            self.randomize((p[0], g[0]))
        fg, bg = self._clicks
        seeds = clicks_to_seeds(fg, bg, p.shape[1:])
        return convert_to_dst_type(seeds, pred, dtype=torch.float32)[0], fg, bg
