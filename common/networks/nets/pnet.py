"""P-Net of DeepIGeoS (dilated convolutions, no pooling) in 2D and 3D, and R-Net as the same net with 4 inputs."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from monai.networks.blocks import Convolution
from torch import nn

__all__ = ["PNet", "rnet"]


class PNet(nn.Module):
    """Resolution-preserving net: five blocks of dilated convolutions, every block's output compressed by a 1x1
    convolution and concatenated, then dropout and a two-layer 1x1 head.

    2D: all convolutions 3x3 with block dilations ``dilations``. 3D (``(H, W, D)``, ``D`` the slice axis): the
    first convolution is 3x3x3, all others 3x3x1 with in-plane dilation ``(d, d, 1)``, so the receptive field
    spans 3 slices. Every convolution: conv, then ``norm``, then ReLU; padding keeps the size.

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

    Forward: ``x`` ``(B, in_channels, *S)`` -> raw logits ``(B, out_channels, *S)`` (same ``S``, any size),
    float32 on ``x.device``. Differentiable. Receptive field: ``1 + 2 * sum(dilation * convs)`` in-plane
    (181 with the defaults).
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
    ) -> None:
        super().__init__()
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims: expected 2 or 3, found {spatial_dims}")
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
                full = spatial_dims == 2 or (b == 0 and c == 0)  # the only 3x3x3 conv of the 3D variant
                kernel = 3 if full else (3, 3, 1)
                dilation = dil if spatial_dims == 2 else ((dil, dil, 1) if not full else 1)
                layers.append(
                    Convolution(
                        spatial_dims,
                        channels,
                        feat,
                        kernel_size=kernel,
                        dilation=dilation,
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
