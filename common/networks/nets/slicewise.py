"""A 2D network applied slice by slice to volumes, so that a 2D variant plugs into a 3D pipeline unchanged."""

from __future__ import annotations

from typing import List

import torch
from torch import nn

__all__ = ["SliceWise"]


class SliceWise(nn.Module):
    """Apply a 2D network to every slice along the last axis of a volume.

    The slices of all volumes of the batch go through ``net`` as one 2D batch, so in training batch norm sees every
    slice; in eval mode they go in groups of ``chunk`` slices (memory). The state dict is ``net``'s under
    ``net.``.

    Args:
        net: 2D network ``(N, C, H, W) -> (N, *S)``: a segmenter's ``(N, K, H, W)`` or a slice classifier's
            ``(N, K)``.
        chunk: slices per call of ``net`` in eval mode (0: all at once).

    Forward: ``x`` ``(B, C, H, W, D)`` -> ``(B, *S, D)`` (a segmenter: ``(B, K, H, W, D)``; a classifier:
    ``(B, K, D)``, one output per slice), dtype and device of ``net``'s output. Differentiable.
    """

    def __init__(self, net: nn.Module, chunk: int = 0) -> None:
        super().__init__()
        if chunk < 0:
            raise ValueError(f"chunk: expected 0 (all slices at once) or a positive slice count, found {chunk}")
        self.net = net
        self.chunk = int(chunk)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 5:
            raise ValueError(f"x: expected a batch of volumes (B, C, H, W, D), found shape {list(x.shape)}")
        b, c, h, w, d = x.shape
        slices = x.permute(0, 4, 1, 2, 3).reshape(b * d, c, h, w)
        if self.training or self.chunk == 0:
            y = self.net(slices)
        else:
            parts: List[torch.Tensor] = []
            for part in slices.split(self.chunk):
                parts.append(self.net(part))
            y = torch.cat(parts)
        return y.reshape([b, d] + list(y.shape[1:])).movedim(1, -1)
