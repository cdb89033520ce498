"""A segmentation network followed by a CRF-RNN guided by the image: DeepIGeoS' P-Net + CRF-Net(f) and R-Net +
CRF-Net(fu) as one trainable module."""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from common.networks.blocks.crf import CRFNet

__all__ = ["CRFSegmenter"]


class CRFSegmenter(nn.Module):
    """``backbone`` logits, then ``crf`` mean-field iterations with the first ``feature_channels`` input channels (the
    image) as guiding features; returns log-probabilities.

    The output is ``log(Q)`` (``Q`` clamped at ``eps``): it takes the place of logits everywhere, since
    ``softmax(log Q) = Q``; MONAI's ``DiceCELoss(softmax=True)`` on it is the Dice of ``Q`` plus the negative
    log-likelihood of ``Q``, and ``argmax`` gives the CRF's labels. With ``seeds`` (CRF-Net(fu)) the clicked voxels
    are clamped to their class in every iteration (:class:`~common.networks.blocks.CRFNet`).

    Args:
        backbone: ``(B, C_in, *S) -> (B, K, *S)`` logits (P-Net or R-Net, or a :class:`SliceWise` 2D one).
        crf: CRF of ``K`` classes, ``feature_channels`` features, the spatial dims of ``S``.
        feature_channels: the first channels of the input passed to ``crf`` as features (1: the normalised image).
        eps: floor of ``Q`` before the log (``log(eps)`` where a class is clamped away).

    Forward: ``x`` ``(B, C_in, *S)``, optional ``seeds`` ``(B, K, *S)`` (one-hot of the clicked class, zero where not
    clicked) -> ``(B, K, *S)`` log-probabilities, dtype of the backbone's logits. Differentiable in ``x`` and every
    parameter of both parts.
    """

    def __init__(self, backbone: nn.Module, crf: CRFNet, feature_channels: int = 1, eps: float = 1e-6) -> None:
        super().__init__()
        if feature_channels < 1:
            raise ValueError(
                f"feature_channels: expected at least 1 input channel as CRF features, found {feature_channels}"
            )
        if not 0.0 < eps < 1.0:
            raise ValueError(f"eps: expected a probability floor in (0, 1), found {eps}")
        self.backbone = backbone
        self.crf = crf
        self.feature_channels = int(feature_channels)
        self.eps = float(eps)

    def forward(self, x: torch.Tensor, seeds: Optional[torch.Tensor] = None) -> torch.Tensor:
        logits = self.backbone(x)
        q = self.crf(logits, x[:, : self.feature_channels], seeds)
        return torch.log(q.clamp_min(self.eps))
