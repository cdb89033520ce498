"""The iterative FCN's loss: weighted false positives and negatives of the soft segmentation plus binary cross-entropy
of the completeness logit (Lessmann et al. 2019)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["InstanceLoss"]


class InstanceLoss(nn.Module):
    """``fp_weight * FP + FN + completeness_weight * BCE``, averaged over the batch, where per patch with sigmoid
    probabilities ``p``, target ``t`` and voxel weights ``w``: ``FP = sum(w p (1 - t)) / sum(w)`` and
    ``FN = sum(w (1 - p) t) / sum(w)`` (the paper's sums, divided by ``sum(w)`` so the scale does not depend on the
    patch size), and BCE of the completeness logit against its label.

    ``pred`` ``(B, 2, *P)`` (segmentation logit, completeness logit repeated:
    :class:`common.networks.nets.IterativeFCN`), ``label`` ``(B, 3, *P)`` (target, weight, completeness repeated:
    :class:`~common.apps.iterative_fcn.InstanceSampled`) -> scalar.
    """

    def __init__(self, fp_weight: float = 0.1, completeness_weight: float = 1.0) -> None:
        super().__init__()
        self.fp_weight, self.completeness_weight = fp_weight, completeness_weight

    def forward(self, pred: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        if pred.shape[1] != 2 or label.shape[1] != 3 or pred.shape[2:] != label.shape[2:]:
            raise ValueError(f"pred, label: expected (B, 2, *P) and (B, 3, *P), found {pred.shape}, {label.shape}")
        p = torch.sigmoid(pred[:, 0].float())
        t, w = label[:, 0].float(), label[:, 1].float()
        dims = tuple(range(1, p.ndim))
        total = w.sum(dims).clamp_min(1e-6)
        fp = (w * p * (1 - t)).sum(dims) / total
        fn = (w * (1 - p) * t).sum(dims) / total
        c_pred, c_label = pred[:, 1].flatten(1)[:, 0].float(), label[:, 2].flatten(1)[:, 0].float()
        bce = F.binary_cross_entropy_with_logits(c_pred, c_label, reduction="none")
        return (self.fp_weight * fp + fn + self.completeness_weight * bce).mean()
