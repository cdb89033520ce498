"""What a line pattern costs the frozen network: the cached k-space under each forward model, the network input, the
search losses, their mask gradient and value (with mixed precision, and summed over ``torchrun`` ranks in a fixed
order), and the ranking of candidate lines."""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np
import torch
from monai.losses import DiceCELoss, DiceLoss, SSIMLoss
from torch import nn

from common.transforms.intensity.array import zscore_slices
from common.transforms.kspace.functional import line_spectrum, undersample_lines
from common.transforms.kspace.phase import FORWARD_MODELS, apply_phase, check_forward_model, phase_seed, smooth_phase
from common.utils.distributed import all_reduce_sum, shard

__all__ = [
    "FP16_LOSS_SCALE",
    "SSIM_L1_WEIGHT",
    "SliceCrossEntropy",
    "SSIML1Loss",
    "pick_ties",
    "Normalize",
    "LossFn",
    "Batches",
    "RankBatches",
    "LOSSES",
    "FORWARD_MODELS",
    "igs_loss",
    "slice_key",
    "cache_line_spectra",
    "cache_rank_batches",
    "network_input",
    "network_logits",
    "autocast_settings",
    "mask_gradient",
    "mask_loss",
    "rank_lines",
]

Normalize = Callable[[torch.Tensor], torch.Tensor]

FP16_LOSS_SCALE = 1024.0
"""Constant loss scale of the fp16 path: it keeps the small logit gradients of a Dice loss over a batch from
underflowing in fp16 and is divided out of the mask gradient again, so it does not move the argmin."""

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

Batches = Sequence[tuple[torch.Tensor, torch.Tensor]]


class RankBatches(NamedTuple):
    """This ``torchrun`` rank's share of a list of batches: :func:`mask_gradient` and :func:`mask_loss` given one sum
    each batch's contribution over the ranks in the order of the whole list, so every rank gets the value one process
    gets from the whole list (one process: the whole list, the one-rank case).

    ``batches``: the batches this rank holds; ``positions``: their indices in the whole list; ``total``: its length.
    """

    batches: Batches
    positions: Sequence[int]
    total: int

    @classmethod
    def deal(cls, batches: Sequence[Any]) -> RankBatches:
        """Every ``world``-th batch of the whole list ``batches`` from position ``rank``
        (:func:`~common.utils.distributed.shard`); ``batches`` may stand for the batches by what makes them (their
        first slices, their slice indices) for the caller to replace with :meth:`_replace`."""
        mine = shard(list(enumerate(batches)))
        return cls([b for _, b in mine], [i for i, _ in mine], len(batches))


LOSSES = ("dice", "dice_pooled", "dice_ce", "ce", "l1", "ssim", "ssim_l1")

SSIM_L1_WEIGHT = 0.84
"""Weight of the SSIM term of ``"ssim_l1"`` (the L1 term gets the rest), as the authors' later code."""


class SliceCrossEntropy(nn.Module):
    """Cross-entropy of per-slice logits ``(B, K)`` against class indices ``(B, 1)`` (stored as floats) -> scalar."""

    def forward(self, logits: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        return nn.functional.cross_entropy(logits.float(), label.reshape(len(label)).round().long())


class SSIML1Loss(nn.Module):
    """``weight * (1 - SSIM) + (1 - weight) * L1`` of an image ``(B, C, H, W)`` against its target in [0, 1]
    (MONAI's ``SSIMLoss``, data range 1, per channel) -> scalar."""

    def __init__(self, weight: float = SSIM_L1_WEIGHT) -> None:
        super().__init__()
        self.weight = float(weight)
        self.ssim = SSIMLoss(spatial_dims=2, data_range=1.0)

    def forward(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        ssim = self.ssim(output, target) if self.weight else 0.0
        l1 = nn.functional.l1_loss(output, target) if self.weight != 1.0 else 0.0
        return self.weight * ssim + (1.0 - self.weight) * l1


def igs_loss(name: str = "dice") -> nn.Module:
    """The search (and fine-tuning) loss by name -> a module ``(network output, label) -> scalar``.

    Segmentation: logits ``(B, K, H, W)``, labels class indices ``(B, 1, H, W)``.

    - ``"dice"``: soft Dice on the softmax per slice and class (MONAI's smoothing 1e-5), background included, then
      averaged over slices and classes.
    - ``"dice_pooled"``: the original's loss: per class, intersection and cardinality summed over the batch and the
      pixels (``dims=(0, 2, 3)``), ``1 - mean_k 2 sum(p g) / (sum(p) + sum(g) + 1e-7)``, background included
      (MONAI ``DiceLoss(batch=True)`` with that smoothing). Its value depends on which slices share a batch.
    - ``"dice_ce"``: 0.75 Dice + 0.25 cross-entropy, the fine-tuning loss of the paper.

    Classification: logits ``(B, K)``, labels ``(B, 1)``: ``"ce"``, cross-entropy (:class:`SliceCrossEntropy`).

    Reconstruction: the image ``(B, C, H, W)`` against the target in [0, 1] of the same shape: ``"l1"`` (mean
    absolute error), ``"ssim"`` (1 - SSIM, MONAI's ``SSIMLoss`` with data range 1: Gaussian window 11, sigma 1.5,
    per channel) and ``"ssim_l1"`` (:data:`SSIM_L1_WEIGHT` SSIM + the rest L1, :class:`SSIML1Loss`).
    """
    if name == "dice":
        return DiceLoss(to_onehot_y=True, softmax=True)
    if name == "dice_pooled":
        return DiceLoss(
            to_onehot_y=True, softmax=True, include_background=True, batch=True, smooth_nr=0.0, smooth_dr=1e-7
        )
    if name == "dice_ce":
        return DiceCELoss(to_onehot_y=True, softmax=True, lambda_dice=0.75, lambda_ce=0.25)
    if name == "ce":
        return SliceCrossEntropy()
    if name in ("l1", "ssim", "ssim_l1"):
        return SSIML1Loss({"l1": 0.0, "ssim": 1.0, "ssim_l1": SSIM_L1_WEIGHT}[name])
    raise ValueError(f"loss: expected one of {', '.join(LOSSES)}, found '{name}'")


def slice_key(item: Mapping) -> str:
    """The text naming one slice (``"<patient>/<phase>/<slice>"``), which seeds its phase map."""
    return f"{item.get('patient', '')}/{item.get('phase', '')}/{item.get('slice', '')}"


def cache_line_spectra(
    items: Sequence[dict],
    pe_dim: int = -1,
    batch_size: int = 64,
    device: torch.device | str = "cpu",
    image_key: str = "image",
    label_key: str = "label",
    forward_model: str = "magnitude",
    phase_seed_base: int = 0,
    max_phase: float = math.pi,
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Batches of (:func:`~common.transforms.line_spectrum` of the images, complex64 ``(B, C, H, W)``, label
    ``(B, 1, H, W)``) on ``device``.

    The transform along the phase-encoding axis is all a line mask needs (see :mod:`common.transforms.kspace`), so it is
    computed once here and reused by every IGS iteration and every evaluated pattern.

    ``forward_model``: ``"magnitude"`` (the paper's setting: the magnitude image is acquired as it is, so its k-space
    is conjugate-symmetric and line ``+f`` duplicates line ``-f``) or ``"phase"`` (each slice is given a smooth,
    seeded phase map before the FFT, :func:`~common.transforms.smooth_phase` with peak ``max_phase`` and the seed
    :func:`~common.transforms.phase_seed` of its :func:`slice_key` and ``phase_seed_base``; the same slice gets the
    same phase for every pattern, so every pattern sees the same data). Full sampling gives the magnitude image
    under both models.
    """
    check_forward_model(forward_model)
    batches = []
    for start in range(0, len(items), batch_size):
        chunk = items[start : start + batch_size]
        images = torch.stack([torch.as_tensor(np.asarray(d[image_key]), dtype=torch.float32) for d in chunk])
        labels = torch.stack([torch.as_tensor(np.asarray(d[label_key]), dtype=torch.float32) for d in chunk])
        if forward_model == "phase":
            height, width = images.shape[-2:]
            phases = torch.stack(
                [smooth_phase(height, width, phase_seed(slice_key(d), phase_seed_base), max_phase) for d in chunk]
            )
            images = apply_phase(images, phases[:, None])  # (B, C, H, W) complex: one phase map per slice
        batches.append((line_spectrum(images.to(device), pe_dim).to(torch.complex64), labels.to(device)))
    return batches


def cache_rank_batches(
    items: Sequence[dict],
    pe_dim: int = -1,
    batch_size: int = 64,
    device: torch.device | str = "cpu",
    forward_model: str = "magnitude",
    phase_seed_base: int = 0,
    max_phase: float = math.pi,
) -> RankBatches:
    """This rank's share of the batches :func:`cache_line_spectra` makes of ``items`` (every ``world``-th batch of
    ``batch_size`` consecutive slices, :func:`~common.utils.distributed.shard`): only those slices' k-space is computed
    and kept on ``device``, so a rank holds ``1 / world`` of the cache. One process holds every batch."""
    starts = RankBatches.deal(range(0, len(items), batch_size))  # this rank's batches, as their first slices
    settings = {"forward_model": forward_model, "phase_seed_base": phase_seed_base, "max_phase": max_phase}
    return starts._replace(
        batches=[
            cache_line_spectra(items[start : start + batch_size], pe_dim, batch_size, device, **settings)[0]
            for start in starts.batches
        ]
    )


def network_input(
    spectrum: torch.Tensor, mask: torch.Tensor, pe_dim: int = -1, normalize: Normalize | None = zscore_slices
) -> torch.Tensor:
    """What the network sees for an acquisition with ``mask``: the zero-filled magnitude, then ``normalize``d
    (per-slice z-score, as in training: the scanner acquires the raw magnitude, normalisation comes after).

    ``spectrum`` complex ``(B, C, H, W)`` from :func:`cache_line_spectra` -> float ``(B, C, H, W)``.
    """
    image = undersample_lines(spectrum, mask, pe_dim)
    return image if normalize is None else normalize(image)


def autocast_settings(device: torch.device | str, amp: bool | str) -> tuple[torch.dtype | None, float]:
    """``(autocast dtype or None for float32, constant loss scale)`` of the search's network passes.

    ``amp``: ``False`` (float32), ``True`` (bfloat16 on a CUDA device that computes it natively, compute capability
    >= 8.0, and on the CPU; float16 with the loss scale :data:`FP16_LOSS_SCALE` on older CUDA devices; float32
    elsewhere), or ``"bf16"`` / ``"fp16"`` to choose. bfloat16 has float32's exponent range, so no gradient
    underflows and no scale is needed; float16 without a scale loses most logit gradients of a Dice loss.
    """
    device = torch.device(device)
    if amp is False or amp is None:
        return None, 1.0
    if amp == "bf16":
        return torch.bfloat16, 1.0
    if amp == "fp16":
        return torch.float16, FP16_LOSS_SCALE
    if amp is not True:
        raise ValueError(f"amp: expected True, False, 'bf16' or 'fp16', found {amp!r}")
    if device.type == "cuda":
        if torch.cuda.get_device_capability(device) >= (8, 0):
            return torch.bfloat16, 1.0
        return torch.float16, FP16_LOSS_SCALE
    if device.type == "cpu":
        return torch.bfloat16, 1.0
    return None, 1.0


def network_logits(network: nn.Module, image: torch.Tensor, dtype: torch.dtype | None) -> torch.Tensor:
    """Float32 logits of ``network`` on ``image`` ``(B, C, H, W)``, autocast to ``dtype`` (channels-last on CUDA)."""
    if image.is_cuda:
        image = image.contiguous(memory_format=torch.channels_last)
    with torch.autocast(image.device.type, dtype=dtype, enabled=dtype is not None):
        logits = network(image)
    return logits.float()


def _group_loss(
    loss_fn: LossFn, logits: torch.Tensor, label: torch.Tensor, loss_batch: int | None
) -> tuple[torch.Tensor, int]:
    """The loss summed over consecutive groups of ``loss_batch`` slices (the whole batch when None), and the count."""
    if loss_batch is None or loss_batch >= len(logits):
        return loss_fn(logits, label), 1
    parts = [loss_fn(logits[i : i + loss_batch], label[i : i + loss_batch]) for i in range(0, len(logits), loss_batch)]
    return torch.stack(parts).sum(), len(parts)


def _rank_share(batches: Batches | RankBatches) -> tuple[RankBatches, bool]:
    """``batches`` as a :class:`RankBatches` (a plain list: all of it, positions in order) and whether it is a rank's
    share (its sums go over the ranks)."""
    if isinstance(batches, RankBatches):
        return batches, True
    return RankBatches(batches, range(len(batches)), len(batches)), False


def _sum_in_order(parts: torch.Tensor, over_ranks: bool) -> torch.Tensor:
    """The float64 per-batch ``parts`` ``(total, ...)`` (a rank's own rows filled, the others zero) summed over the
    ranks (exact: each row is non-zero on one rank only) and then over the batches in list order: the same bits on
    every rank and for any number of ranks."""
    if over_ranks:
        all_reduce_sum(parts)
    return parts.sum(0)


def mask_gradient(
    network: nn.Module,
    batches: Batches | RankBatches,
    mask: torch.Tensor,
    loss_fn: LossFn,
    pe_dim: int = -1,
    amp: bool | str = False,
    normalize: Normalize | None = zscore_slices,
    loss_batch: int | None = None,
) -> tuple[torch.Tensor, float]:
    """``dLoss/dmask`` summed over all loss groups, and the mean group loss, at the given line mask.

    ``batches`` from :func:`cache_line_spectra` (or this rank's share, :class:`RankBatches`); ``mask`` ``(W,)`` or
    ``(C, W)`` on their device -> gradient of the same shape (float32, on that device) and a float. The loss is
    evaluated on consecutive groups of ``loss_batch`` slices of each batch (the whole batch when None), so the batch
    size, a memory and speed setting, does not change a batch-pooled loss. Each batch's gradient and loss are kept
    apart in float64 and summed in the order of the batches (over the ranks for a :class:`RankBatches`), so the result
    does not depend on how the batches were dealt. The network is applied as it is (call ``eval()`` and freeze it
    first). ``amp`` (see :func:`autocast_settings`) autocasts the network only; the FFTs and the loss stay in float32,
    and the float16 path scales the loss by a constant that is divided out again (recomputed in float32, with a
    warning, if the scaled gradient overflows). The loss is accumulated on the device: one host synchronisation per
    call.
    """
    share, over_ranks = _rank_share(batches)
    if share.total == 0:
        raise ValueError("batches: expected at least one batch of slices, found none")
    dtype, scale = autocast_settings(mask.device, amp)
    weights = mask.detach().clone().requires_grad_(True)
    grads = torch.zeros(share.total, *mask.shape, dtype=torch.float64, device=mask.device)
    losses = torch.zeros(share.total, 2, dtype=torch.float64, device=mask.device)  # per batch: loss sum, groups
    for position, (spectrum, label) in zip(share.positions, share.batches):
        logits = network_logits(network, network_input(spectrum, weights, pe_dim, normalize), dtype)
        loss, n = _group_loss(loss_fn, logits, label, loss_batch)
        (grad,) = torch.autograd.grad(loss * scale if scale != 1.0 else loss, weights)
        grads[position] = grad.double() / scale
        losses[position, 0] = loss.detach().double()
        losses[position, 1] = n
    grad = _sum_in_order(grads, over_ranks)
    if scale != 1.0 and not bool(torch.isfinite(grad).all()):
        warnings.warn(f"IGS: the float16 mask gradient overflowed at loss scale {scale:g}; recomputed in float32")
        return mask_gradient(network, batches, mask, loss_fn, pe_dim, False, normalize, loss_batch)
    total, groups = _sum_in_order(losses, over_ranks).tolist()
    return grad.float(), total / max(groups, 1)


@torch.no_grad()
def mask_loss(
    network: nn.Module,
    batches: Batches | RankBatches,
    mask: torch.Tensor,
    loss_fn: LossFn,
    pe_dim: int = -1,
    amp: bool | str = False,
    normalize: Normalize | None = zscore_slices,
    loss_batch: int | None = None,
) -> float:
    """The mean group loss at ``mask`` as in :func:`mask_gradient` (summed in the same order, over the ranks for a
    :class:`RankBatches`), from a forward pass only (no gradient)."""
    share, over_ranks = _rank_share(batches)
    dtype, _ = autocast_settings(mask.device, amp)
    losses = torch.zeros(share.total, 2, dtype=torch.float64, device=mask.device)
    for position, (spectrum, label) in zip(share.positions, share.batches):
        logits = network_logits(network, network_input(spectrum, mask, pe_dim, normalize), dtype)
        loss, n = _group_loss(loss_fn, logits, label, loss_batch)
        losses[position, 0] = loss.double()
        losses[position, 1] = n
    total, groups = _sum_in_order(losses, over_ranks).tolist()
    return total / max(groups, 1)


def pick_ties(scores: Mapping[int, float], k: int, rtol: float, priority: Callable[[int], Any]) -> list[int]:
    """``k`` keys of ``scores``, lowest score first; keys within ``rtol * |best|`` of the best go by ``priority``."""
    left = dict(scores)
    picked = []
    for _ in range(min(k, len(left))):
        best = min(left.values())
        tied = [i for i, s in left.items() if s - best <= rtol * abs(best)]
        choice = min(tied, key=priority)
        picked.append(choice)
        del left[choice]
    return picked


def rank_lines(scores: torch.Tensor, exclude: Sequence[int], k: int, rtol: float = 1e-4) -> list[int]:
    """The ``k`` lines to add next, best first: the lowest ``scores`` (a loss gradient per line), with near-ties
    broken deterministically.

    ``scores`` ``(W,)``, line ``W // 2`` the k-space centre; lines in ``exclude`` are never picked. Repeatedly, the
    remaining lines whose score is within ``rtol * |best|`` of the lowest are ties, and of those the line of the
    smallest ``|f|`` (``f = line - W // 2``) is taken, then the ``+f`` side. Under the magnitude forward model
    ``+f`` and ``-f`` have the same gradient up to float rounding (about 6e-8 relative), so without this the side
    would be chosen by rounding noise (and differ between devices, batch sizes and precisions).
    """
    width = scores.shape[-1]
    values = scores.detach().double().cpu().tolist()
    skip = {int(i) for i in exclude}
    candidates = {i: v for i, v in enumerate(values) if i not in skip}
    return pick_ties(candidates, k, rtol, lambda i: (abs(i - width // 2), i < width // 2))
