"""The 3D residual U-Net of Tomita et al. (NeuroImage: Clinical 2020) for stroke lesions: residual blocks with
GroupNorm, max-pool downsampling, transposed-convolution upsampling, one output logit."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from common.networks.checkpointing import ActivationCheckpointing

__all__ = ["ResidualBlock3d", "ResUNet3d"]


class ResidualBlock3d(ActivationCheckpointing, nn.Module):
    """``x + f(x)`` with ``f`` = ReLU, conv 3x3x3, GroupNorm, ReLU, conv 3x3x3, GroupNorm, ReLU (the activation comes
    before each convolution: pre-activation). The identity has no weights: where the channel count changes it is
    padded or cut at the front of the channel axis, as the original code's ``F.pad`` with ``pad[6] = out - in``:
    zero channels are prepended (more channels), or its last ``out_channels`` channels are kept (fewer; in a decoder
    block after ``cat([upsampled, skip])`` these are the encoder skip's). With ``checkpoint``, in training mode only
    the block's input is kept and ``f`` is computed again in the backward pass
    (:class:`~common.networks.checkpointing.ActivationCheckpointing`: same outputs and gradients, less memory).

    Shapes: ``(B, in_channels, *S)`` -> ``(B, out_channels, *S)``.
    """

    def __init__(self, in_channels: int, out_channels: int, num_groups: int = 8, checkpoint: bool = False) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.checkpoint = checkpoint
        self.conv1 = nn.Conv3d(in_channels, out_channels, 3, padding=1)
        self.norm1 = nn.GroupNorm(num_groups, out_channels)
        self.conv2 = nn.Conv3d(out_channels, out_channels, 3, padding=1)
        self.norm2 = nn.GroupNorm(num_groups, out_channels)

    def compute(self, x: torch.Tensor) -> torch.Tensor:
        y = self.norm1(self.conv1(F.relu(x)))
        y = F.relu(self.norm2(self.conv2(F.relu(y))))
        # (B, in, *S) -> (B, out, *S): a negative pad cuts the first in - out channels, a positive one prepends zeros
        identity = F.pad(x, [0, 0, 0, 0, 0, 0, self.out_channels - self.in_channels, 0])
        return y + identity


class _Up(nn.Module):
    """Two residual blocks, then a transposed convolution (kernel 2, stride 2) + GroupNorm + ReLU halving the channels;
    the result (resized trilinearly to the skip's size where a max pool floored an odd size, as in the original) is
    concatenated with the skip connection of that level."""

    def __init__(
        self, in_channels: int, mid_channels: int, out_channels: int, num_groups: int, checkpoint: bool
    ) -> None:
        super().__init__()
        self.block1 = ResidualBlock3d(in_channels, mid_channels, num_groups, checkpoint)
        self.block2 = ResidualBlock3d(mid_channels, mid_channels, num_groups, checkpoint)
        self.up = nn.ConvTranspose3d(mid_channels, out_channels, 2, stride=2)
        self.norm = nn.GroupNorm(num_groups, out_channels)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.norm(self.up(self.block2(self.block1(x)))))
        if y.shape[2:] != skip.shape[2:]:  # an odd size was floored by the max pool: back to the skip's size
            y = F.interpolate(y, size=skip.shape[2:], mode="trilinear", align_corners=False)
        return torch.cat([y, skip], dim=1)


class ResUNet3d(nn.Module):
    """3D residual U-Net with ``len(features)`` levels (Tomita et al. 2020, section 2.3, and the original code's
    ``UNet3D``).

    Encoder: level 0 is one :class:`ResidualBlock3d` (``in_channels -> features[0]``); each deeper level is a 2x max
    pool and two blocks (``features[k-1] -> features[k] -> features[k]``). Decoder, from the bottom up: two blocks
    (the deepest level's two extra blocks, then at each level ``2 features[k] -> features[k]``), a transposed
    convolution (kernel 2, stride 2) to ``features[k-1]`` channels with GroupNorm and ReLU, concatenated with the
    encoder output of that level; the top is one block (``2 features[0] -> features[0]``) and a 1x1x1 transposed
    convolution to ``out_channels`` logits (apply a sigmoid for probabilities). Every norm is
    ``GroupNorm(num_groups)``; weights are Kaiming-normal (fan out, ReLU), norms start at 1 and 0, as in the original.

    Args:
        in_channels: input channels (1: T1w).
        out_channels: output logits (1: lesion).
        features: channels per level, each divisible by ``num_groups``; default ``(32, 64, 128, 256)``.
        num_groups: GroupNorm groups (8).
        checkpoint: activation checkpointing in training mode: every residual block keeps only its input and computes
            its activations again in the backward pass; same outputs and gradients, less memory, about one more
            forward pass of compute (see the bundle card's memory options). Eval mode and TorchScript copies are
            unaffected.

    Shapes: ``(B, in_channels, H, W, D)`` -> ``(B, out_channels, H, W, D)``, any size of at least
    ``2 ** (len(features) - 1)`` per axis; where a size is not divisible by it (the paper's zoom-out crop 144x172x168:
    172 = 8 x 21.5) the upsampled features are resized to the skip connection's size, as in the original.
    """

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int = 1,
        features: Sequence[int] = (32, 64, 128, 256),
        num_groups: int = 8,
        checkpoint: bool = False,
    ) -> None:
        super().__init__()
        features = [int(f) for f in features]
        if len(features) < 2 or any(f % num_groups for f in features):
            raise ValueError(
                f"features: expected at least 2 levels, each divisible by num_groups={num_groups}, found {features}"
            )
        self.stem = ResidualBlock3d(in_channels, features[0], num_groups, checkpoint)
        self.down = nn.ModuleList(
            nn.Sequential(
                nn.MaxPool3d(2),
                ResidualBlock3d(features[k - 1], features[k], num_groups, checkpoint),
                ResidualBlock3d(features[k], features[k], num_groups, checkpoint),
            )
            for k in range(1, len(features))
        )
        ups = [_Up(features[-1], features[-1], features[-2], num_groups, checkpoint)]
        for k in range(len(features) - 2, 0, -1):
            ups.append(_Up(2 * features[k], features[k], features[k - 1], num_groups, checkpoint))
        self.up = nn.ModuleList(ups)
        self.top = ResidualBlock3d(2 * features[0], features[0], num_groups, checkpoint)
        self.head = nn.ConvTranspose3d(features[0], out_channels, 1)
        for m in self.modules():
            if isinstance(m, (nn.Conv3d, nn.ConvTranspose3d)):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.GroupNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = [self.stem(x)]
        for down in self.down:
            skips.append(down(skips[-1]))
        y = skips[-1]
        for k, up in enumerate(self.up):
            y = up(y, skips[len(skips) - 2 - k])
        return self.head(self.top(y))
