"""The iterative FCN of Lessmann et al. (2019): a 3D U-Net-like network with the same number of channels at every
level, two input channels (image patch, instance-memory patch), nearest-neighbour upsampling, and a completeness branch
on the coarsest level pooled to one scalar per patch."""

from __future__ import annotations

import torch
from torch import nn

from common.networks.checkpointing import ActivationCheckpointing

__all__ = ["IterativeFCN"]


class _ConvBlock(ActivationCheckpointing, nn.Sequential):
    """Two 3x3x3 convolutions, each followed by batch norm (with ``norm``) and ReLU:
    ``(B, in_channels, *S)`` -> ``(B, out_channels, *S)``; activations recomputed in backward with ``checkpoint``."""

    def __init__(self, in_channels: int, out_channels: int, norm: bool, checkpoint: bool) -> None:
        layers: list[nn.Module] = []
        for c in (in_channels, out_channels):
            layers.append(nn.Conv3d(c, out_channels, 3, padding=1, bias=not norm))
            if norm:
                layers.append(nn.BatchNorm3d(out_channels))
            layers.append(nn.ReLU(inplace=True))
        super().__init__(*layers)
        self.checkpoint = checkpoint

    def compute(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self:
            x = layer(x)
        return x


class IterativeFCN(nn.Module):
    """Segments the next vertebra in a patch given the ones already segmented, and says whether it is complete.

    Every level has its own two 3x3x3 convolutions (batch norm, ReLU) with ``features`` channels (no weight shared
    across levels); the contracting path max-pools by 2, the expanding path upsamples by nearest neighbour and
    concatenates the skip connection; a 1x1x1 convolution gives the segmentation logit. The completeness branch takes
    the coarsest level's features through a 3x3x3 convolution, global max pooling over the patch and a linear layer.

    Args:
        in_channels: 2 (image, instance memory).
        features: channels at every level (64 in the paper).
        levels: resolution levels (4: spatial sizes must be multiples of ``2 ** (levels - 1)``).
        norm: batch norm after each convolution.
        checkpoint: activation checkpointing in training mode: each level's block keeps only its input and computes
            its activations again in the backward pass
            (:class:`~common.networks.checkpointing.ActivationCheckpointing`): the same outputs, gradients and
            running statistics, less memory (the paper-size training step: the bundle card's memory options), about
            one more forward pass of compute. Eval mode and TorchScript copies are unaffected.

    Input ``(B, in_channels, X, Y, Z)``; output ``(B, 2, X, Y, Z)``: channel 0 the segmentation logit of the next
    vertebra per voxel, channel 1 the completeness logit of the patch (one value, repeated over the patch so that the
    network has one tensor output, as TorchScript export and the bundle's in/out check expect).
    """

    def __init__(
        self, in_channels: int = 2, features: int = 64, levels: int = 4, norm: bool = True, checkpoint: bool = False
    ) -> None:
        super().__init__()
        if levels < 2:
            raise ValueError(f"levels: expected >= 2, found {levels}")
        self.down = nn.ModuleList(
            [_ConvBlock(in_channels if i == 0 else features, features, norm, checkpoint) for i in range(levels)]
        )
        self.up = nn.ModuleList([_ConvBlock(2 * features, features, norm, checkpoint) for _ in range(levels - 1)])
        self.pool = nn.MaxPool3d(2)
        self.upsample = nn.Upsample(scale_factor=2, mode="nearest")
        self.segment = nn.Conv3d(features, 1, 1)
        self.complete_conv = nn.Sequential(nn.Conv3d(features, features, 3, padding=1), nn.ReLU(inplace=True))
        self.complete = nn.Linear(features, 1)
        self.multiple = 2 ** (levels - 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` ``(B, 2, X, Y, Z)`` (image, memory) -> ``(B, 2, X, Y, Z)`` (segmentation logit, completeness logit)."""
        skips: list[torch.Tensor] = []
        for i, block in enumerate(self.down):
            x = block(x if i == 0 else self.pool(x))
            skips.append(x)
        c = torch.amax(self.complete_conv(x), dim=(2, 3, 4))
        complete = self.complete(c)  # (B, 1)
        for i, block in enumerate(self.up):
            x = block(torch.cat([self.upsample(x), skips[len(skips) - 2 - i]], dim=1))
        seg = self.segment(x)
        return torch.cat([seg, complete[:, :, None, None, None].expand_as(seg)], dim=1)
