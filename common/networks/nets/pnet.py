"""P-Net of DeepIGeoS (dilated convolutions, no pooling) in 2D and 3D, and R-Net as the same net with 4 inputs."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from monai.networks.blocks import Convolution
from torch import nn

__all__ = ["PNet", "rnet"]

_CONTEXTS = ("3d", "block", "2.5d")


class PNet(nn.Module):
    """Resolution-preserving net: five blocks of dilated convolutions, every block's output compressed by a 1x1
    convolution and concatenated, then dropout and a two-layer 1x1 head.

    2D: all convolutions 3x3, dilation ``d`` of their block. 3D (``(H, W, D)``, ``D`` the slice axis), by
    ``context``:

    - ``"3d"`` (default): all convolutions 3x3x3 with dilation ``(d, d, d)``, so every block adds context along
      ``D`` as in-plane (for isotropic volumes such as BraTS); receptive field ``1 + 2 * sum(d * convs)`` voxels
      on every axis (181 with the defaults).
    - ``"2.5d"``: the first convolution 3x3x3 with dilation ``dilations[0]``, all others 3x3x1 with in-plane
      dilation ``(d, d, 1)``: the receptive field spans ``1 + 2 * dilations[0]`` slices (3 with the defaults),
      for a third of the multiply-adds and weights of the 3x3 convolutions after the first.
    - ``"block"``: the first convolution of every block 3x3x3 with dilation ``(d, d, d)``, the others 3x3x1 with
      ``(d, d, 1)``: receptive field ``1 + 2 * sum(d)`` slices (63 with the defaults). This is how the public
      re-implementation (HITLAB-DeepIGeoS) builds the paper's 3D P-Net; the paper's layer table was not available to
      check which of ``"3d"`` and ``"block"`` it is.

    Every convolution: conv, then ``norm``, then ReLU; padding keeps the size.

    Args:
        spatial_dims: 2 or 3.
        in_channels: 1 for P-Net (the image); 4 for R-Net (image, P-Net label, two geodesic maps).
        out_channels: classes including background.
        features: channels of each block (DeepIGeoS: 64 in 2D, about 16 in 3D).
        dilations: dilation of each block.
        convs_per_block: convolutions in each block.
        compress: channels each block output is compressed to before concatenation.
        head_channels: channels of the hidden 1x1 layer of the head.
        dropout: dropout probability on the concatenated features.
        norm: MONAI norm name (``"batch"``, ``"instance"``) or ``None``.
        context: ``"3d"``, ``"block"`` or ``"2.5d"`` (see above); a 3D option: with ``spatial_dims=2`` only
            ``"3d"`` (the default, meaning 3x3 kernels throughout) is accepted.

    Forward: ``x`` ``(B, in_channels, *S)`` -> raw logits ``(B, out_channels, *S)`` (same ``S``, any size),
    float32 on ``x.device``. Differentiable.
    """

    def __init__(
        self,
        spatial_dims: int = 2,
        in_channels: int = 1,
        out_channels: int = 2,
        features: Sequence[int] = (64, 64, 64, 64, 64),
        dilations: Sequence[int] = (1, 2, 4, 8, 16),
        convs_per_block: Sequence[int] = (2, 2, 3, 3, 3),
        compress: int = 16,
        head_channels: int = 64,
        dropout: float = 0.5,
        norm: str | None = "batch",
        context: str = "3d",
    ) -> None:
        super().__init__()
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims: expected 2 or 3, found {spatial_dims}")
        if context not in _CONTEXTS:
            raise ValueError(f"context: expected one of {_CONTEXTS}, found {context!r}")
        if spatial_dims == 2 and context != "3d":
            raise ValueError(f"context: expected '3d' (the default) for spatial_dims=2, found {context!r}")
        if not len(features) == len(dilations) == len(convs_per_block) or len(features) == 0:
            raise ValueError(
                f"features, dilations, convs_per_block: expected equal non-zero lengths, found "
                f"{len(features)}, {len(dilations)}, {len(convs_per_block)}"
            )
        if min(*features, *dilations, *convs_per_block, in_channels, out_channels, compress, head_channels) < 1:
            raise ValueError(
                "channels, dilations and convolution counts: expected positive values, found "
                f"{list(features)}, {list(dilations)}, {list(convs_per_block)}"
            )
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout: expected a probability in [0, 1), found {dropout}")
        blocks = []
        compressors = []
        channels = in_channels
        for b, (feat, dil, n_conv) in enumerate(zip(features, dilations, convs_per_block)):
            layers = []
            for c in range(n_conv):
                in_plane_only = (context == "2.5d" and (b, c) != (0, 0)) or (context == "block" and c > 0)
                layers.append(
                    Convolution(
                        spatial_dims,
                        channels,
                        feat,
                        kernel_size=(3, 3, 1) if in_plane_only else 3,
                        dilation=(dil, dil, 1) if in_plane_only else dil,
                        act="relu",
                        norm=norm,
                        adn_ordering="NA",
                    )
                )
                channels = feat
            blocks.append(nn.Sequential(*layers))
            compressors.append(
                Convolution(spatial_dims, feat, compress, kernel_size=1, act="relu", norm=norm, adn_ordering="NA")
            )
        self.blocks = nn.ModuleList(blocks)
        self.compressors = nn.ModuleList(compressors)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Sequential(
            Convolution(
                spatial_dims,
                compress * len(blocks),
                head_channels,
                kernel_size=1,
                act="relu",
                norm=norm,
                adn_ordering="NA",
            ),
            Convolution(spatial_dims, head_channels, out_channels, kernel_size=1, conv_only=True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outs = []
        for block, compressor in zip(self.blocks, self.compressors):
            x = block(x)
            outs.append(compressor(x))
        return self.head(self.dropout(torch.cat(outs, dim=1)))


def rnet(spatial_dims: int = 2, out_channels: int = 2, **kwargs: Any) -> PNet:
    """R-Net: a :class:`PNet` with 4 input channels (image, P-Net label, background and foreground geodesic maps,
    concatenated in the order the pipeline uses); ``kwargs`` go to :class:`PNet` unchanged."""
    return PNet(spatial_dims=spatial_dims, in_channels=4, out_channels=out_channels, **kwargs)
