"""Reference implementations that tests (and benchmarks) compare the project's code with: the seeds' own structures,
rebuilt from their READMEs and code, kept out of the ``common`` package because nothing should use them in production.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from common.utils import fft2c, ifft2c

__all__ = ["HookUNet", "seed_dice_loss", "seed_style_mask_gradient"]


def _seed_block(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, padding=1), nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True),
        nn.Conv2d(out_channels, out_channels, 3, padding=1), nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True),
    )  # fmt: skip


class HookUNet(nn.Module):
    """The seed's U-Net structure, kept for comparison only: encoder blocks push their output on
    ``self.activations`` from forward hooks, each transposed convolution's hook pops one and concatenates it
    (``[upsampled, skip]``); one ``nn.Sequential``; sigmoid output ``(B, out_channels, H, W)`` in ``(0, 1)``.
    The state it keeps on ``self`` between calls is what breaks it under DataParallel and after a failed forward.
    """

    def __init__(self, in_channels: int = 3, out_channels: int = 1, features: int = 32, depth: int = 4) -> None:
        super().__init__()
        self.activations: list[torch.Tensor] = []
        layers: list[nn.Module] = []
        channels = in_channels
        for _ in range(depth - 1):
            layers += [_seed_block(channels, features), nn.MaxPool2d(2, 2)]
            layers[-2].register_forward_hook(self._push)
            channels = features
        layers.append(_seed_block(channels, features))
        for _ in range(depth - 1):
            layers += [
                nn.ConvTranspose2d(features, features, 2, stride=2, bias=False),
                _seed_block(2 * features, features),
            ]
            layers[-2].register_forward_hook(self._pop)
        layers.append(nn.Conv2d(features, out_channels, 1))
        self.layers = nn.Sequential(*layers)

    def _push(self, module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        self.activations.append(output)

    def _pop(self, module: nn.Module, inputs: tuple, output: torch.Tensor) -> torch.Tensor:
        return torch.cat((output, self.activations.pop()), dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.layers(x))


def seed_dice_loss(prob: torch.Tensor, target: torch.Tensor, smooth: float = 1.0) -> torch.Tensor:
    """The seed's soft Dice loss over the whole batch: ``1 - (2 sum(p g) + s) / (sum(p) + sum(g) + s)``."""
    p, g = prob[:, 0].reshape(-1), target[:, 0].reshape(-1)
    return 1 - (2 * (p * g).sum() + smooth) / (p.sum() + g.sum() + smooth)


def seed_style_mask_gradient(
    network: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    mask: torch.Tensor,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    batch_size: int = 8,
) -> torch.Tensor:
    """The original IGS gradient step: for each batch of ``batch_size`` slices the full 2D FFT is recomputed, the
    line mask ``(W,)`` applied, the zero-filled magnitude fed to the frozen network and the loss backpropagated to
    the mask; returns the summed gradient ``(W,)``. ``images`` ``(N, C, H, W)``, ``labels`` ``(N, 1, H, W)``, on
    any device (moved to ``mask.device``); fp32, no caching."""
    m = mask.detach().clone().requires_grad_(True)
    for start in range(0, len(images), batch_size):
        x = images[start : start + batch_size].to(m.device)
        y = labels[start : start + batch_size].to(m.device)
        loss_fn(network(ifft2c(fft2c(x) * m).abs()), y).backward()
    return m.grad.detach()
