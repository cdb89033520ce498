"""Boundary weights: ``w = 1 + scale * exp(-d^2 / denominator)`` with ``d`` the distance to the boundary of the
labelled foreground; Lessmann et al. (2019) use ``1 + 8 exp(-d^2 / 36)`` (d in mm at 1 mm voxels)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from monai.config import NdarrayOrTensor
from monai.transforms import Transform
from monai.utils import TransformBackends
from monai.utils.type_conversion import convert_to_dst_type, convert_to_numpy
from scipy import ndimage

__all__ = ["boundary_weights", "BoundaryWeight"]


def boundary_weights(
    label: np.ndarray, scale: float = 8.0, denominator: float = 36.0, spacing: Sequence[float] | None = None
) -> np.ndarray:
    """``1 + scale * exp(-d^2 / denominator)`` per voxel of ``label`` (spatial, any dims), ``d`` the Euclidean
    distance (in ``spacing`` units, voxels when None) from the voxel to the nearest boundary voxel of the foreground
    (``label > 0``; a boundary voxel is a foreground voxel with a face neighbour in the background, so ``d = 0`` on
    it). A label without foreground (or without boundary) gives 1 everywhere. float32, the shape of ``label``."""
    fg = np.asarray(label) > 0
    boundary = fg & ~ndimage.binary_erosion(fg, border_value=1)
    if not boundary.any():
        return np.ones(fg.shape, dtype=np.float32)
    d = ndimage.distance_transform_edt(~boundary, sampling=spacing)
    return (1.0 + scale * np.exp(-(d**2) / denominator)).astype(np.float32)


class BoundaryWeight(Transform):
    """:func:`boundary_weights` of a channel-first label ``(1, *S)`` -> ``(1, *S)`` float32 of the input's type
    (voxel distances: resample to the spacing the weights are meant in first, e.g. 1 mm)."""

    backend = [TransformBackends.NUMPY]

    def __init__(self, scale: float = 8.0, denominator: float = 36.0) -> None:
        if scale < 0 or denominator <= 0:
            raise ValueError(f"scale, denominator: expected >= 0 and > 0, found {scale}, {denominator}")
        self.scale, self.denominator = scale, denominator

    def __call__(self, img: NdarrayOrTensor) -> NdarrayOrTensor:
        if img.shape[0] != 1:
            raise ValueError(f"img: expected one channel (1, *S), found shape {tuple(img.shape)}")
        w = boundary_weights(convert_to_numpy(img)[0], self.scale, self.denominator)[None]
        return convert_to_dst_type(w, img, dtype=torch.float32)[0]
