"""Intensity transforms (array): per-slice z-scoring."""

from __future__ import annotations

import torch
from monai.config import NdarrayOrTensor
from monai.transforms import Transform
from monai.utils import TransformBackends
from monai.utils.type_conversion import convert_to_dst_type, convert_to_tensor

__all__ = ["zscore_slices", "ZScoreSlices"]


def zscore_slices(x: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Z-score every 2D slice ``x[..., :, :]`` over its last two axes; ``(*, H, W)`` -> same shape. Differentiable."""
    mean = x.mean(dim=(-2, -1), keepdim=True)
    std = x.std(dim=(-2, -1), keepdim=True, unbiased=False).clamp_min(eps)
    return (x - mean) / std


class ZScoreSlices(Transform):
    """Z-score each 2D slice on its own: ``(x - mean) / max(std, eps)`` over the in-plane axes ``(H, W)``.

    Args:
        eps: floor on the standard deviation, so that a constant slice maps to zeros rather than NaN.

    Shapes: ``(C, H, W)`` (each channel a slice) or ``(C, H, W, D)`` (each ``[c, :, :, d]`` a slice) -> float32 of
    the same shape and type.
    """

    backend = [TransformBackends.TORCH, TransformBackends.NUMPY]

    def __init__(self, eps: float = 1e-6) -> None:
        if eps <= 0:
            raise ValueError(f"eps: expected > 0, found {eps}")
        self.eps = eps

    def __call__(self, img: NdarrayOrTensor) -> NdarrayOrTensor:
        x = convert_to_tensor(img, dtype=torch.float32, track_meta=False)
        if x.ndim not in (3, 4):
            raise ValueError(f"ZScoreSlices: expected (C, H, W) or (C, H, W, D), found shape {tuple(x.shape)}")
        if x.ndim == 4:  # (C, H, W, D): slices along the last axis
            out = zscore_slices(x.movedim(-1, 1), self.eps).movedim(1, -1)
        else:
            out = zscore_slices(x, self.eps)
        return convert_to_dst_type(out.contiguous(), img, dtype=torch.float32)[0]
