"""The original's test-time prediction: the network on one centre crop of the volume, nothing outside it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Callable

import torch
from monai.inferers import Inferer

__all__ = ["centre_crop_slices", "CentreCropInferer"]


def centre_crop_slices(shape: Sequence[int], roi_size: Sequence[int]) -> tuple[slice, ...]:
    """Slices of the centre crop of ``roi_size`` in a volume of ``shape`` (each axis starting at
    ``(shape - roi) // 2``, as the original code crops); an axis where ``roi_size`` is larger than ``shape`` or not
    positive is kept whole."""
    if len(shape) != len(roi_size):
        raise ValueError(f"roi_size: expected {len(shape)} sizes, found {list(roi_size)}")
    out = []
    for s, r in zip(shape, roi_size):
        r = s if r <= 0 or r > s else int(r)
        start = (s - r) // 2
        out.append(slice(start, start + r))
    return tuple(out)


class CentreCropInferer(Inferer):
    """Predict only the centre crop of ``roi_size`` (the original's ``center`` sampling at test time); every voxel
    outside it gets the logit ``fill`` (``-inf``: probability 0). Where the volume is smaller than ``roi_size`` along an
    axis the whole axis is used.

    Shapes: ``inputs`` ``(B, C, H, W, D)`` -> ``(B, out_channels, H, W, D)``.
    """

    def __init__(self, roi_size: Sequence[int], fill: float = float("-inf")) -> None:
        super().__init__()
        self.roi_size = [int(r) for r in roi_size]
        self.fill = fill

    def __call__(
        self, inputs: torch.Tensor, network: Callable[..., torch.Tensor], *args: Any, **kwargs: Any
    ) -> torch.Tensor:
        box = centre_crop_slices(inputs.shape[2:], self.roi_size)
        out = network(inputs[(slice(None), slice(None), *box)], *args, **kwargs)
        full = torch.full((*out.shape[:2], *inputs.shape[2:]), self.fill, dtype=out.dtype, device=out.device)
        full[(slice(None), slice(None), *box)] = out
        return full
