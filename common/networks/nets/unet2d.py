"""2D U-Net with a ``depth`` parameter and the same width at every level (Buda-style LGG set-up, plain module)."""

from __future__ import annotations

import torch
from monai.networks.nets.basic_unet import TwoConv
from torch import nn

__all__ = ["UNet2d"]


def _block(in_channels: int, out_channels: int) -> TwoConv:
    """Two 3x3 convolutions (bias), each followed by batch norm and ReLU: MONAI's ``TwoConv``."""
    return TwoConv(2, in_channels, out_channels, act=("relu", {"inplace": True}), norm="batch", bias=True)


class _UpBlock(nn.Module):
    """2x2 stride-2 transposed convolution (no bias), concatenation ``[upsampled, skip]``, then a conv block."""

    def __init__(self, features: int) -> None:
        super().__init__()
        self.up = nn.ConvTranspose2d(features, features, kernel_size=2, stride=2, bias=False)
        self.conv = _block(2 * features, features)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.conv(torch.cat([self.up(x), skip], dim=1))


class UNet2d(nn.Module):
    """U-Net with ``depth`` levels of ``features`` channels each: max-pooling down, transposed convolutions up.

    Level ``l < depth - 1`` is a conv block whose output is kept as the skip of the decoder at the same level and
    then max-pooled (2x2); the last level is the bottleneck block. Every conv block is two 3x3 convolutions, each
    followed by batch norm and ReLU. Each decoder level upsamples with a 2x2 stride-2 transposed convolution
    (no bias), concatenates ``[upsampled, skip]`` and applies a conv block (``2 * features -> features``); a 1x1
    convolution gives the logits. The seed's module returns ``sigmoid`` of these logits; here the sigmoid belongs to
    the loss (``DiceLoss(sigmoid=True)``) and the post-processing, so that mixed precision stays stable.

    Args:
        in_channels: image channels (3 for LGG: pre-contrast, FLAIR, post-contrast).
        out_channels: output channels (1: tumour logit).
        features: channels at every level (the seed fixes 32).
        depth: number of levels including the bottleneck (>= 1); ``depth - 1`` poolings (the published run: 4).

    Forward: ``x`` ``(B, in_channels, H, W)`` with ``H`` and ``W`` multiples of ``2 ** (depth - 1)`` -> logits
    ``(B, out_channels, H, W)``, float32 on ``x.device``. Differentiable; scriptable (``torch.jit.script``).
    """

    def __init__(self, in_channels: int = 3, out_channels: int = 1, features: int = 32, depth: int = 4) -> None:
        super().__init__()
        if min(in_channels, out_channels, features) < 1:
            raise ValueError(
                f"in_channels, out_channels, features: expected positive counts, found {in_channels}, "
                f"{out_channels}, {features}"
            )
        if depth < 1:
            raise ValueError(f"depth: expected >= 1 level, found {depth}")
        self.depth = depth
        self.encoders = nn.ModuleList(
            [_block(in_channels if level == 0 else features, features) for level in range(depth - 1)]
        )
        self.pool = nn.MaxPool2d(kernel_size=2, stride=2)
        self.bottleneck = _block(in_channels if depth == 1 else features, features)
        self.decoders = nn.ModuleList([_UpBlock(features) for _ in range(depth - 1)])
        self.head = nn.Conv2d(features, out_channels, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips: list[torch.Tensor] = []
        for encoder in self.encoders:
            x = encoder(x)
            skips.append(x)
            x = self.pool(x)
        x = self.bottleneck(x)
        for i, decoder in enumerate(self.decoders):
            x = decoder(x, skips[len(skips) - 1 - i])
        return self.head(x)
