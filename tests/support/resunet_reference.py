"""The zoom-in & zoom-out method's original network (BMIRDS/3dMRISegmentation ``UNet3D``), rebuilt for comparison from
the description of its code in the methods brief (``docs/methods.md``, "details read from the original code"), not
from the project's :class:`~common.networks.nets.ResUNet3d`: written with the original's names (``inplanes``,
``planes``) and its channel rule (level ``k`` has ``inplanes * 2 ** (k + 1)`` channels), its modules registered in
the order of ``ResUNet3d``'s so that ``load_state_dict`` of one into the other pairs the parameters by position.

The residual identity is the original's negative/positive ``F.pad`` on the channel axis: ``shortcut="front"`` (the
original) pads with ``pad[6] = planes - inplanes``, which prepends zero channels, or cuts the first channels and keeps
the last ``planes`` (the encoder skip of ``cat((up, skip))``); ``shortcut="back"`` (``pad[7]``) appends zeros or keeps
the first ``planes``, the convention the project used before, kept here only to show that it differs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["OriginalResBlock", "OriginalUNet3D"]


class OriginalResBlock(nn.Module):
    """Pre-activation residual block: ``relu -> conv1 -> gn1 -> relu -> conv2 -> gn2 -> relu``, plus the identity padded
    or cut on the channel axis by ``F.pad``. Shapes: ``(B, inplanes, *S)`` -> ``(B, planes, *S)``."""

    def __init__(self, inplanes: int, planes: int, num_groups: int = 8, shortcut: str = "front") -> None:
        super().__init__()
        if shortcut not in ("front", "back"):
            raise ValueError(f"shortcut: expected 'front' or 'back', found {shortcut!r}")
        self.inplanes, self.planes, self.shortcut = inplanes, planes, shortcut
        self.relu = nn.ReLU()
        self.conv1 = nn.Conv3d(inplanes, planes, kernel_size=3, stride=1, padding=1)
        self.gn1 = nn.GroupNorm(num_groups, planes)
        self.conv2 = nn.Conv3d(planes, planes, kernel_size=3, stride=1, padding=1)
        self.gn2 = nn.GroupNorm(num_groups, planes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.gn1(self.conv1(self.relu(x)))
        out = self.relu(self.gn2(self.conv2(self.relu(out))))
        d = self.planes - self.inplanes
        residual = F.pad(x, (0, 0, 0, 0, 0, 0, d, 0) if self.shortcut == "front" else (0, 0, 0, 0, 0, 0, 0, d))
        return out + residual


class OriginalUNet3D(nn.Module):
    """``UNet3D(in_channels, out_channels, inplanes)`` with ``levels`` levels of ``inplanes * 2, * 4, ...`` channels
    (``inplanes=16``, as the original was run: 32/64/128/256). Encoder: a block, then per deeper level a max pool and
    two blocks; decoder: two blocks, a transposed convolution (2, stride 2) + GroupNorm + ReLU, trilinear resize to the
    skip where sizes differ, ``cat((up, skip))``; top block and a 1x1x1 transposed convolution to the logits.

    Shapes: ``(B, in_channels, H, W, D)`` -> ``(B, out_channels, H, W, D)``.
    """

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int = 1,
        inplanes: int = 16,
        levels: int = 4,
        num_groups: int = 8,
        shortcut: str = "front",
    ) -> None:
        super().__init__()
        planes = [inplanes * 2 ** (k + 1) for k in range(levels)]

        def block(i: int, o: int) -> OriginalResBlock:
            return OriginalResBlock(i, o, num_groups, shortcut)

        self.stem = block(in_channels, planes[0])
        self.down = nn.ModuleList(
            nn.Sequential(nn.MaxPool3d(2), block(planes[k - 1], planes[k]), block(planes[k], planes[k]))
            for k in range(1, levels)
        )
        self.up = nn.ModuleList()
        for k in range(levels - 1, 0, -1):
            wide = planes[k] if k == levels - 1 else 2 * planes[k]  # the deepest level has no concatenation yet
            self.up.append(
                nn.ModuleDict(
                    {
                        "block1": block(wide, planes[k]),
                        "block2": block(planes[k], planes[k]),
                        "up": nn.ConvTranspose3d(planes[k], planes[k - 1], kernel_size=2, stride=2),
                        "norm": nn.GroupNorm(num_groups, planes[k - 1]),
                    }
                )
            )
        self.top = block(2 * planes[0], planes[0])
        self.head = nn.ConvTranspose3d(planes[0], out_channels, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = [self.stem(x)]
        for down in self.down:
            skips.append(down(skips[-1]))
        y = skips.pop()
        for up in self.up:
            skip = skips.pop()
            y = F.relu(up["norm"](up["up"](up["block2"](up["block1"](y)))))
            if y.shape[2:] != skip.shape[2:]:
                y = F.interpolate(y, size=skip.shape[2:], mode="trilinear", align_corners=False)
            y = torch.cat((y, skip), dim=1)
        return self.head(self.top(y))
