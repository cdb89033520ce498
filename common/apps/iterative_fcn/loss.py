"""The iterative FCN's loss: weighted false positives and negatives of the soft segmentation plus binary cross-entropy
of the completeness logit (Lessmann et al. 2019)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["InstanceLoss"]


class InstanceLoss(nn.Module):
    """``fp_weight * FP + FN + completeness_weight * BCE``, averaged over the batch, where per patch with sigmoid
    probabilities ``p``, target ``t`` and voxel weights ``w``: ``FP = sum(w p (1 - t))`` and ``FN = sum(w (1 - p) t)``
    (the paper's sums), each divided by ``sum(w)`` when ``seg_reduction`` is "mean", and BCE of the completeness logit
    against its label.

    The reduction sets the balance of the two terms: with "mean" (the default) the segmentation term is a weighted
    fraction of the patch and the completeness BCE dominates (at initialisation on synthetic spines, the demo's 32^3
    patches: 0.059 against 0.93, BCE about 16x); with "sum" (the paper's and the re-implementation's) the term grows
    with the patch volume and the BCE is negligible beside it (5.6e3 against 0.93 on the same patches, about 6e3x;
    more on 128^3 patches). ``completeness_weight`` rescales the BCE.

    ``pred`` ``(B, 2, *P)`` (segmentation logit, completeness logit repeated:
    :class:`common.networks.nets.IterativeFCN`), ``label`` ``(B, 3, *P)`` (target, weight, completeness repeated:
    :class:`~common.apps.iterative_fcn.InstanceSampled`) -> scalar.
    """

    def __init__(self, fp_weight: float = 0.1, completeness_weight: float = 1.0, seg_reduction: str = "mean") -> None:
        super().__init__()
        if seg_reduction not in ("mean", "sum"):
            raise ValueError(f"seg_reduction: expected 'mean' or 'sum', found {seg_reduction!r}")
        self.fp_weight, self.completeness_weight, self.seg_reduction = fp_weight, completeness_weight, seg_reduction

    def terms(self, pred: torch.Tensor, label: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The per-patch segmentation term ``fp_weight * FP + FN`` and completeness BCE, each ``(B,)`` (unweighted by
        ``completeness_weight``)."""
        if pred.shape[1] != 2 or label.shape[1] != 3 or pred.shape[2:] != label.shape[2:]:
            raise ValueError(f"pred, label: expected (B, 2, *P) and (B, 3, *P), found {pred.shape}, {label.shape}")
        p = torch.sigmoid(pred[:, 0].float())
        t, w = label[:, 0].float(), label[:, 1].float()
        dims = tuple(range(1, p.ndim))
        seg = self.fp_weight * (w * p * (1 - t)).sum(dims) + (w * (1 - p) * t).sum(dims)
        if self.seg_reduction == "mean":
            seg = seg / w.sum(dims).clamp_min(1e-6)
        c_pred, c_label = pred[:, 1].flatten(1)[:, 0].float(), label[:, 2].flatten(1)[:, 0].float()
        return seg, F.binary_cross_entropy_with_logits(c_pred, c_label, reduction="none")

    def forward(self, pred: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        seg, bce = self.terms(pred, label)
        return (seg + self.completeness_weight * bce).mean()
