"""Simulated user clicks on segmentation errors (DeepIGeoS rule, on the slices a user looks at), as seed maps and
click coordinates."""

from __future__ import annotations

import math

import numpy as np
import torch
from monai.config import NdarrayOrTensor
from monai.transforms import Randomizable, Transform
from monai.utils import TransformBackends
from monai.utils.type_conversion import convert_to_dst_type, convert_to_numpy
from scipy import ndimage

__all__ = ["SLICE_CHOICES", "clicks_per_region", "simulate_clicks", "clicks_to_seeds", "paint_balls", "SimulateClicks"]

SLICE_CHOICES = ("all_errors", "per_error_type")
"""How a 3D round of :func:`simulate_clicks` picks the slice along each axis: the most mis-segmented voxels of both
kinds together (three slices), or of each kind apart (the public re-implementation's choice, up to six slices)."""


def clicks_per_region(size: int, min_size: int = 30, voxels_per_click: int = 100) -> int:
    """DeepIGeoS rule: ``0`` clicks if ``size < min_size`` else ``ceil(size / voxels_per_click)``."""
    return 0 if size < min_size else math.ceil(size / voxels_per_click)


def _regions(error: np.ndarray, structure: np.ndarray) -> list[np.ndarray]:
    """Coordinates ``(Nm, ndim)`` of each connected region of ``error``, regions in raster order of their first
    voxel, voxels in raster order within a region."""
    labels, n_regions = ndimage.label(error, structure=structure)
    flat = labels.ravel()
    order = np.argsort(flat, kind="stable")  # voxel indices grouped by region
    ends = np.cumsum(np.bincount(flat, minlength=n_regions + 1))
    return [
        np.stack(np.unravel_index(order[ends[r - 1] : ends[r]], error.shape), axis=1) for r in range(1, n_regions + 1)
    ]


def _within_budget(wanted: list[int], sizes: list[int], max_clicks: int | None) -> list[int]:
    """Clicks per region: ``wanted`` if the total fits ``max_clicks``, else one click at a time to the regions in
    decreasing size (round robin, each up to what it wants) until ``max_clicks`` are given."""
    if max_clicks is None or sum(wanted) <= max_clicks:
        return wanted
    given = [0] * len(wanted)
    order = sorted(range(len(wanted)), key=lambda r: -sizes[r])  # stable: equal sizes keep their order
    left = max_clicks
    while left:
        for r in order:
            if left and given[r] < wanted[r]:
                given[r] += 1
                left -= 1
    return given


def _distinct(points: list[np.ndarray], ndim: int) -> np.ndarray:
    """Concatenated clicks ``(n, ndim)`` int64 without repeats (two slices share a line), first occurrence kept."""
    if not points:
        return np.zeros((0, ndim), dtype=np.int64)
    stacked = np.concatenate(points).astype(np.int64)
    first = np.unique(stacked, axis=0, return_index=True)[1]
    return stacked[np.sort(first)]


def _most_errors(error: np.ndarray) -> list[tuple[int, int]]:
    """``(axis, index)`` of the slice with the most voxels of the 3D mask ``error`` along each axis (the first on
    ties)."""
    return [(a, int(error.sum(axis=tuple(b for b in range(3) if b != a)).argmax())) for a in range(3)]


def simulate_clicks(
    pred: np.ndarray,
    label: np.ndarray,
    rng: np.random.RandomState,
    min_size: int = 30,
    voxels_per_click: int = 100,
    connectivity: int | None = None,
    max_clicks: int | None = 10,
    slice_choice: str = "all_errors",
) -> tuple[np.ndarray, np.ndarray]:
    """One round of the clicks a user would give on the errors of ``pred``: foreground clicks in under-segmented
    pixels (``label`` and not ``pred``), background clicks in over-segmented ones (``pred`` and not ``label``).

    The user looks at 2D slices. A 2D image is one slice. In a 3D volume, along each axis (axial, coronal,
    sagittal) the user looks at the slice with the most mis-segmented voxels (the first such slice on ties), counted
    as ``slice_choice`` says: ``"all_errors"`` (default) counts under- and over-segmented voxels together, so a round
    looks at three slices (what a user sees in a 2D viewer); ``"per_error_type"`` counts each kind apart, so the
    under-segmented regions are taken from their own three slices and the over-segmented ones from theirs (up to six
    slices; the public re-implementation's choice, HITLAB-DeepIGeoS ``utils/geodis_toolkits.py``: ``randompoint`` with
    its own ``focusregion_index`` per error type). In each connected under- or over-segmented region of those slices
    (``Nm`` pixels, 2D connectivity) the DeepIGeoS rule asks for ``clicks_per_region(Nm)`` clicks, drawn at random
    without replacement. If the round asks for more than ``max_clicks``, the clicks go one at a time to the regions
    in decreasing size (round robin) until the budget is spent: the largest errors first, each region at most what
    the rule asks for it.

    Args:
        pred: ``(*S)`` binary prediction (non-zero = foreground), ``S`` of 2 or 3 axes.
        label: ``(*S)`` ground truth (non-zero = foreground).
        rng: random state the clicks are drawn from (e.g. a transform's ``self.R``).
        min_size: regions smaller than this get no click (DeepIGeoS: 30).
        voxels_per_click: a region of ``Nm`` pixels asks for ``ceil(Nm / voxels_per_click)`` clicks (DeepIGeoS: 100).
        connectivity: neighbourhood of the connected regions within a slice: 1 = edges only (4-connected),
            2 or ``None`` = edges and corners (8-connected).
        max_clicks: budget of one round (foreground and background together); ``None``: no budget. The default 10
            keeps a round to what a user clicks on three slices.
        slice_choice: how a 3D round picks its slices, one of :data:`SLICE_CHOICES` (ignored in 2D).

    Returns: foreground and background clicks, each ``(n, len(S))`` int64 voxel indices, distinct, at most
    ``max_clicks`` together. Equal ``rng`` states give equal clicks. ``len(fg) + len(bg)`` is the round's click count.
    """
    pred = np.asarray(pred) != 0
    label = np.asarray(label) != 0
    if pred.shape != label.shape or pred.ndim not in (2, 3):
        raise ValueError(f"pred, label: expected equal shapes with 2 or 3 axes, found {pred.shape} and {label.shape}")
    if slice_choice not in SLICE_CHOICES:
        raise ValueError(f"slice_choice: expected one of {list(SLICE_CHOICES)}, found {slice_choice!r}")
    under, over = label & ~pred, pred & ~label
    views: dict[bool, list[tuple[int, int] | None]]  # per kind (foreground click?), the slices it is looked at on
    if pred.ndim == 2:
        views = {True: [None], False: [None]}
    elif slice_choice == "all_errors":
        views = dict.fromkeys((True, False), _most_errors(under | over))
    else:
        views = {True: _most_errors(under), False: _most_errors(over)}
    structure = ndimage.generate_binary_structure(2, 2 if connectivity is None else connectivity)
    regions = []  # (is foreground click, coordinates (Nm, ndim))
    for v in range(len(views[True])):
        for foreground, error in ((True, under), (False, over)):
            view = views[foreground][v]
            plane = error if view is None else np.take(error, view[1], axis=view[0])
            for coords in _regions(plane, structure):
                regions.append((foreground, coords if view is None else np.insert(coords, view[0], view[1], axis=1)))
    sizes = [len(coords) for _, coords in regions]
    counts = _within_budget([clicks_per_region(s, min_size, voxels_per_click) for s in sizes], sizes, max_clicks)
    fg, bg = [], []
    for (foreground, coords), n in zip(regions, counts):
        if n:
            (fg if foreground else bg).append(coords[rng.choice(len(coords), n, replace=False)])
    return _distinct(fg, pred.ndim), _distinct(bg, pred.ndim)


def clicks_to_seeds(foreground: np.ndarray, background: np.ndarray, spatial_shape: tuple[int, ...]) -> np.ndarray:
    """Seed maps ``(2, *spatial_shape)`` float32: channel 0 background clicks, channel 1 foreground clicks (one-hot
    of the clicked class, the layout :class:`common.networks.blocks.CRFNet` clamps and
    :func:`common.transforms.geodesic_map` reads)."""
    seeds = np.zeros((2, *spatial_shape), dtype=np.float32)
    for channel, points in ((0, background), (1, foreground)):
        if len(points):
            seeds[(channel, *np.asarray(points).T)] = 1.0
    return seeds


def paint_balls(label: NdarrayOrTensor, seeds: NdarrayOrTensor, radius: float) -> NdarrayOrTensor:
    """The clicks painted on ``label`` as balls, with no network (a baseline of click refinement).

    Every voxel within ``radius`` voxels (Euclidean, in voxel units whatever the spacing) of a click takes the label
    of the nearest click: 1 for foreground clicks, 0 for background clicks (a voxel as near to a background click as
    to a foreground one becomes background); every other voxel keeps its label. A clicked voxel is its own nearest
    click, so it always ends with the label it was clicked as; ``radius = 0`` paints the clicked voxels only.

    Args:
        label: ``(*S)`` binary label (any integer, bool or float dtype; non-zero is foreground).
        seeds: ``(2, *S)`` background (channel 0) and foreground (channel 1) click maps, non-zero at the clicks, as
            :func:`clicks_to_seeds` makes them; no voxel in both.
        radius: ball radius in voxels, ``>= 0``.

    Returns: ``(*S)`` the painted label, 0/1 in the type, dtype and device of ``label``.
    """
    lab = convert_to_numpy(label) != 0
    sd = convert_to_numpy(seeds) != 0
    if sd.shape != (2, *lab.shape):
        raise ValueError(f"seeds: expected (2, *S) with S the label's {lab.shape}, found {sd.shape}")
    if not radius >= 0:
        raise ValueError(f"radius: expected a radius in voxels >= 0, found {radius}")
    if (sd[0] & sd[1]).any():
        raise ValueError(
            f"seeds: expected no voxel clicked as both background and foreground, found {int((sd[0] & sd[1]).sum())}"
        )
    far = np.full(lab.shape, np.inf)
    bg, fg = (ndimage.distance_transform_edt(~s) if s.any() else far for s in sd)  # distance to the nearest click
    out = lab.copy()
    out[(fg <= radius) & (fg < bg)] = True
    out[(bg <= radius) & (bg <= fg)] = False
    return convert_to_dst_type(out, label, dtype=label.dtype)[0]


class SimulateClicks(Randomizable, Transform):
    """Simulate one round of :func:`simulate_clicks` on a prediction; return seed maps and coordinates.

    Args:
        min_size: regions smaller than this get no click.    voxels_per_click: pixels per click in a region.
        connectivity: 1 (4-connected) or 2 (8-connected, the default) within a slice.
        max_clicks: clicks per round at most (foreground and background together); ``None``: no budget.
        slice_choice: how a 3D round picks its slices (:data:`SLICE_CHOICES`).

    Shapes: ``pred`` and ``label`` ``(1, *S)`` (channel-first binary maps, ``S`` of 2 or 3 axes) ->
    ``(seeds, foreground, background)``: seeds ``(2, *S)`` float32 (background, foreground; type and device of
    ``pred``), clicks ``(n, len(S))`` int64 NumPy arrays (the round's click count is ``len(fg) + len(bg)``). Not
    differentiable. Draws come from ``self.R`` in :meth:`randomize` (seed with ``set_random_state``).
    """

    backend = [TransformBackends.NUMPY, TransformBackends.TORCH]

    def __init__(
        self,
        min_size: int = 30,
        voxels_per_click: int = 100,
        connectivity: int | None = None,
        max_clicks: int | None = 10,
        slice_choice: str = "all_errors",
    ) -> None:
        if min_size < 1 or voxels_per_click < 1:
            raise ValueError(
                f"min_size, voxels_per_click: expected positive voxel counts, found {min_size}, {voxels_per_click}"
            )
        if connectivity is not None and connectivity not in (1, 2):
            raise ValueError(f"connectivity: expected None, 1 or 2 (within a slice), found {connectivity}")
        if max_clicks is not None and max_clicks < 1:
            raise ValueError(f"max_clicks: expected None or at least 1 click per round, found {max_clicks}")
        if slice_choice not in SLICE_CHOICES:
            raise ValueError(f"slice_choice: expected one of {list(SLICE_CHOICES)}, found {slice_choice!r}")
        self.min_size = min_size
        self.voxels_per_click = voxels_per_click
        self.connectivity = connectivity
        self.max_clicks = max_clicks
        self.slice_choice = slice_choice
        self._clicks: tuple[np.ndarray, np.ndarray] | None = None

    def randomize(self, data: tuple[np.ndarray, np.ndarray]) -> None:
        """Draw the clicks for ``data = (pred, label)`` (spatial ``(*S)`` arrays) from ``self.R``."""
        pred, label = data
        self._clicks = simulate_clicks(
            pred,
            label,
            self.R,
            self.min_size,
            self.voxels_per_click,
            self.connectivity,
            self.max_clicks,
            self.slice_choice,
        )

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
