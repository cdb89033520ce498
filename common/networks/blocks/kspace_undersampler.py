"""K-space undersampling as a network layer (fixed or trainable mask)."""

from __future__ import annotations

import torch
from torch import nn

from common.transforms.kspace.functional import (
    broadcast_mask,
    check_pe_dim,
    undersample,
)

__all__ = ["KSpaceUndersampler"]


class KSpaceUndersampler(nn.Module):
    """Undersampling as a module: ``(B, C, H, W)`` magnitude -> ``(B, C, H, W)`` zero-filled magnitude.

    Args:
        mask: the pattern (see :func:`undersample`); kept as a buffer, or as a parameter with ``trainable=True``.
        pe_dim: -1 (lines index W) or -2 (lines index H).
        point: whether ``mask`` is a 2D point mask.
        trainable: make the mask an ``nn.Parameter`` (gradient-based pattern learning).

    ``forward(x, mask=None)`` uses ``mask`` when given (e.g. a mask that requires grad), else the stored one.
    """

    def __init__(self, mask: torch.Tensor, pe_dim: int = -1, point: bool = False, trainable: bool = False) -> None:
        super().__init__()
        self.pe_dim = check_pe_dim(pe_dim)
        self.point = point
        mask = torch.as_tensor(mask, dtype=torch.float32)
        broadcast_mask(mask, pe_dim, point)  # validates the shape at construction
        if trainable:
            self.mask = nn.Parameter(mask.clone())
        else:
            self.register_buffer("mask", mask.clone())

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return undersample(x, self.mask if mask is None else mask, self.pe_dim, self.point)
