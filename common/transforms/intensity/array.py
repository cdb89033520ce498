"""Intensity transforms (array): per-slice z-scoring, z-scoring within a foreground (a skull-stripped brain), CT
stored with an intensity offset back to Hounsfield units."""

from __future__ import annotations

import logging

import torch
from monai.config import NdarrayOrTensor
from monai.transforms import Transform
from monai.utils import TransformBackends
from monai.utils.type_conversion import convert_to_dst_type, convert_to_tensor

__all__ = ["zscore_slices", "ZScoreSlices", "ZScoreForeground", "HounsfieldUnits"]

logger = logging.getLogger(__name__)


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


class ZScoreForeground(Transform):
    """Z-score each channel over its foreground (the voxels above ``threshold``, e.g. the brain of a skull-stripped
    MRI) and give every other voxel the value ``background``.

    With ``background=0`` this is MONAI's ``NormalizeIntensity(nonzero=True, channel_wise=True)`` for images that are
    0 outside the foreground; but 0 is then the foreground's mean, so the outside looks like average tissue to a
    network, and an intensity-driven geodesic distance crosses it at no cost. A ``background`` below every foreground
    value (e.g. -5 standard deviations) keeps the outside distinct.

    Args:
        background: value of the voxels at or below ``threshold``, in units of the foreground's standard deviation.
        threshold: a voxel is foreground when it is above this (0: the non-zero voxels of a non-negative image).
        eps: floor on the standard deviation (a constant foreground maps to 0).

    Shapes: ``(C, *S)`` -> float32 of the same shape and type (a MetaTensor keeps its meta data). A channel without
    foreground becomes all ``background``. Not meant to be differentiated (the mask is a threshold).
    """

    backend = [TransformBackends.TORCH, TransformBackends.NUMPY]

    def __init__(self, background: float = 0.0, threshold: float = 0.0, eps: float = 1e-6) -> None:
        if eps <= 0:
            raise ValueError(f"eps: expected > 0, found {eps}")
        self.background, self.threshold, self.eps = float(background), float(threshold), float(eps)

    def __call__(self, img: NdarrayOrTensor) -> NdarrayOrTensor:
        x = convert_to_tensor(img, dtype=torch.float32, track_meta=False)
        if x.ndim < 2:
            raise ValueError(f"ZScoreForeground: expected a channel-first image (C, *S), found shape {tuple(x.shape)}")
        out = torch.full_like(x, self.background)
        for c in range(x.shape[0]):
            inside = x[c] > self.threshold
            if bool(inside.any()):
                values = x[c][inside].double()
                std = max(float(values.std(unbiased=False)), self.eps)
                out[c][inside] = ((values - values.mean()) / std).float()
        return convert_to_dst_type(out, img, dtype=torch.float32)[0]


class HounsfieldUnits(Transform):
    """CT in Hounsfield units whatever its storage: some copies (e.g. of CSI 2014) store ``HU + 1000`` as 0-4095.

    ``offset="auto"``: a volume with no negative value is taken as stored with an offset of 1000 (CT of a body holds
    air or fat, below 0 HU) and shifted by -1000; a volume with negative values is left as it is. Either way the
    finding (minimum, maximum, offset applied) is logged with ``name`` so that it is never silent. An int ``offset``
    is subtracted as given. ``(C, *S)`` -> float32 of the same shape and type.
    """

    backend = [TransformBackends.TORCH]

    def __init__(self, offset: str | int = "auto") -> None:
        if offset != "auto" and not isinstance(offset, int):
            raise ValueError(f"offset: expected 'auto' or an int, found {offset!r}")
        self.offset = offset

    def __call__(self, img: NdarrayOrTensor, name: str = "image") -> NdarrayOrTensor:
        x = convert_to_tensor(img, track_meta=False).float()
        lo, hi = float(x.min()), float(x.max())
        offset = (1000 if lo >= 0 else 0) if self.offset == "auto" else self.offset
        logger.info("%s: intensities %.0f to %.0f, offset %d subtracted to give HU", name, lo, hi, offset)
        return convert_to_dst_type(x - offset, img, dtype=torch.float32)[0]
