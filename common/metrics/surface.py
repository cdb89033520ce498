"""Surface distances per volume and class (HD95, ASSD) in physical units, with an explicit empty-mask convention."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from monai.config import NdarrayOrTensor
from monai.metrics.utils import get_edge_surface_distance
from monai.networks.utils import one_hot

from common.utils.stats import nanmean

__all__ = ["EMPTY_MASK_CONVENTION", "SurfaceDistances", "surface_distances", "surface_summary", "surface_unit"]

EMPTY_MASK_CONVENTION = (
    "HD95 and ASSD are computed only where both the prediction and the ground truth of a class are non-empty. "
    "Otherwise the value is NaN and left out of every mean, and the case is counted instead: 'absent' (both empty, "
    "as for Dice), 'missed' (empty prediction, non-empty ground truth) or 'spurious' (non-empty prediction, empty "
    "ground truth); reports give these counts beside the means."
)
"""The wording used in docstrings, reports and model cards."""


@dataclass(frozen=True)
class SurfaceDistances:
    """Surface distances of ``B`` volumes and ``K`` classes (see :func:`surface_distances`).

    Attributes:
        hd95: ``(B, K)`` float64, the 95th-percentile symmetric Hausdorff distance in ``unit``; NaN unless measured.
        assd: ``(B, K)`` float64, the average symmetric surface distance in ``unit``; NaN unless measured.
        pred_empty, label_empty: ``(B, K)`` bool, whether the class is empty in the prediction / the ground truth.
        unit: ``"mm"`` when a spacing was given, ``"px"`` (1 per voxel along every axis) when not.
    """

    hd95: np.ndarray
    assd: np.ndarray
    pred_empty: np.ndarray
    label_empty: np.ndarray
    unit: str

    @property
    def measured(self) -> np.ndarray:
        """``(B, K)`` bool: both masks non-empty, so ``hd95`` and ``assd`` are finite."""
        return ~self.pred_empty & ~self.label_empty

    @property
    def absent(self) -> np.ndarray:
        """``(B, K)`` bool: the class is in neither mask."""
        return self.pred_empty & self.label_empty

    @property
    def missed(self) -> np.ndarray:
        """``(B, K)`` bool: empty prediction, non-empty ground truth."""
        return self.pred_empty & ~self.label_empty

    @property
    def spurious(self) -> np.ndarray:
        """``(B, K)`` bool: non-empty prediction, empty ground truth."""
        return ~self.pred_empty & self.label_empty


def surface_unit(spacing: object | None) -> str:
    """``"mm"`` for a given spacing, ``"px"`` (one unit per voxel along every axis, slices included) for None."""
    return "px" if spacing is None else "mm"


def _spacing_per_volume(spacing: object | None, batch: int, dims: int) -> list[tuple[float, ...] | None]:
    if spacing is None:
        return [None] * batch
    s = np.asarray(spacing.cpu() if isinstance(spacing, torch.Tensor) else spacing, dtype=np.float64)
    if s.ndim == 1:
        s = np.broadcast_to(s, (batch, s.shape[0]))
    if s.shape != (batch, dims) or not np.all(np.isfinite(s)) or not np.all(s > 0):
        raise ValueError(
            f"spacing: expected {dims} positive sizes (one per spatial axis) or a ({batch}, {dims}) array, one row per "
            f"volume, found {s.tolist() if s.size <= 12 else s.shape}"
        )
    return [tuple(float(v) for v in row) for row in s]


def surface_distances(
    pred: NdarrayOrTensor,
    label: NdarrayOrTensor,
    spacing: Sequence[float] | np.ndarray | torch.Tensor | None = None,
    num_classes: int | None = None,
    include_background: bool = False,
) -> SurfaceDistances:
    """HD95 and ASSD of every class of every volume, as MONAI's ``compute_hausdorff_distance(percentile=95)`` and
    ``compute_average_surface_distance(symmetric=True)`` define them (Euclidean, voxel spacing honoured), from one
    call of MONAI's ``get_edge_surface_distance`` per volume and class (the two ``compute_*`` would each make it).

    Definitions (MONAI's): the surface of a mask is its voxels with at least one face neighbour (4 in 2D, 6 in 3D)
    outside the mask or outside the image. With ``d(A->B)`` the distances from each surface voxel of ``A`` to the
    nearest surface voxel of ``B``, HD95 is ``max(q95(d(pred->label)), q95(d(label->pred)))`` (``q95`` the linearly
    interpolated 95th percentile), and ASSD the mean of all distances of both directions together.

    Empty masks: no MONAI call is made for them (MONAI would warn and return NaN or inf).
    Convention: HD95 and ASSD are computed only where both the prediction and the ground truth of a class are
    non-empty; otherwise the value is NaN and left out of every mean, and the case is counted instead: ``absent``
    (both empty, as for Dice), ``missed`` (empty prediction, non-empty ground truth) or ``spurious`` (non-empty
    prediction, empty ground truth); see the properties of :class:`SurfaceDistances`.

    Args:
        pred, label: ``(B, K, *S)`` one-hot / binary (foreground > 0.5) when ``num_classes`` is None, else integer
            label maps ``(B, 1, *S)`` with values in ``[0, num_classes)``; ``S`` is 2D ``(H, W)`` or 3D
            ``(H, W, D)``. Any device; computed on the CPU.
        spacing: voxel size along each spatial axis in mm, ``(len(S),)`` for all volumes or ``(B, len(S))`` one row
            per volume (anisotropic allowed). None: 1 per voxel along every axis, and the unit is ``"px"``.
        num_classes: number of classes (background included) for label maps; None for one-hot input.
        include_background: keep channel 0 (MONAI's default drops it, as here).

    Returns:
        :class:`SurfaceDistances` with ``(B, K)`` arrays, ``K`` the kept classes (channel 0 dropped unless
        ``include_background``).
    """
    p = torch.as_tensor(pred).detach().cpu()
    g = torch.as_tensor(label).detach().cpu()
    if p.shape != g.shape or p.ndim not in (4, 5):
        raise ValueError(
            f"pred, label: expected equal shapes (B, K, H, W[, D]), found {tuple(p.shape)} and {tuple(g.shape)}"
        )
    if num_classes is not None:
        if p.shape[1] != 1:
            raise ValueError(f"pred, label: expected label maps (B, 1, *S) with num_classes, found {tuple(p.shape)}")
        for name, t in (("pred", p), ("label", g)):
            if t.numel() and (t.min() < 0 or t.max() >= num_classes or (t.is_floating_point() and (t % 1).any())):
                raise ValueError(
                    f"{name}: expected integer labels in [0, {num_classes}), found values in "
                    f"[{float(t.min())}, {float(t.max())}]"
                )
        p, g = one_hot(p.long(), num_classes, dim=1), one_hot(g.long(), num_classes, dim=1)
    p, g = p.float() > 0.5, g.float() > 0.5
    if not include_background:
        p, g = p[:, 1:], g[:, 1:]
    batch, classes, dims = p.shape[0], p.shape[1], p.ndim - 2
    per_volume = _spacing_per_volume(spacing, batch, dims)
    pred_empty = ~p.flatten(2).any(2).numpy()
    label_empty = ~g.flatten(2).any(2).numpy()
    hd95 = np.full((batch, classes), np.nan)
    assd = np.full((batch, classes), np.nan)
    with warnings.catch_warnings():
        # MONAI 1.6 passes its own deprecated get_mask_edges(always_return_as_numpy=...) internally; nothing to act on
        warnings.filterwarnings("ignore", message=".*always_return_as_numpy.*")
        for b, c in zip(*np.nonzero(~pred_empty & ~label_empty)):
            # both directions' distances once, then HD95 and ASSD from them as MONAI's compute_* derive theirs
            _, (to_label, to_pred), _ = get_edge_surface_distance(
                p[b, c], g[b, c], spacing=per_volume[b], symmetric=True
            )
            hd95[b, c] = max(float(torch.quantile(d, 0.95)) for d in (to_label, to_pred))
            assd[b, c] = float(torch.cat([to_label, to_pred]).mean())
    return SurfaceDistances(hd95, assd, pred_empty, label_empty, surface_unit(spacing))


def surface_summary(distances: SurfaceDistances) -> dict[str, np.ndarray]:
    """Per class over the ``B`` volumes: ``hd95`` and ``assd`` means over measured volumes (NaN if none), and the
    counts ``measured``, ``missed``, ``spurious``, ``absent``; each ``(K,)``."""
    out: dict[str, np.ndarray] = {}
    for key in ("hd95", "assd"):
        out[key] = nanmean(getattr(distances, key), axis=0)
    for key in ("measured", "missed", "spurious", "absent"):
        out[key] = getattr(distances, key).sum(0)
    return out
