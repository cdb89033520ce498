"""Scores of a line pattern on test volumes (per-volume Dice, surface distances at the slices' true positions);
fine-tuning on a pattern."""

from __future__ import annotations

import copy
from collections.abc import Sequence

import numpy as np
import torch
from scipy.ndimage import binary_erosion
from scipy.spatial import KDTree
from torch import nn

from common.apps.igs.objective import (
    Normalize,
    autocast_settings,
    igs_loss,
    network_input,
    network_logits,
)
from common.metrics.surface import SurfaceDistances, surface_distances, surface_unit
from common.transforms.intensity.array import zscore_slices

__all__ = [
    "volume_keys",
    "predict_slices",
    "pooled_dice",
    "volume_dice",
    "volume_surface_distances",
    "fine_tune",
]


def volume_keys(items: Sequence[dict]) -> list[str]:
    """The volume each slice belongs to: ``"<patient>/<phase>"`` (a frame of a patient)."""
    return [f"{d.get('patient', '')}/{d.get('phase', '')}" for d in items]


@torch.no_grad()
def predict_slices(
    network: nn.Module,
    batches: Sequence[tuple[torch.Tensor, torch.Tensor]],
    mask: torch.Tensor,
    pe_dim: int = -1,
    amp: bool | str = False,
    normalize: Normalize | None = zscore_slices,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The network's class map of every slice undersampled with ``mask``, and the ground truth, in batch order.

    ``batches`` from :func:`~common.apps.igs.cache_line_spectra`; ``amp`` as :func:`~common.apps.igs.autocast_settings`
    (the search's mixed precision: bfloat16 where supported). Returns ``(N, H, W)`` uint8 prediction (argmax of the
    logits) and ground truth, on the CPU (classes < 256).
    """
    network.eval()
    dtype, _ = autocast_settings(mask.device, amp)
    preds, labels = [], []
    for spectrum, label in batches:
        image = network_input(spectrum, mask, pe_dim, normalize)
        preds.append(network_logits(network, image, dtype).argmax(1).to(torch.uint8).cpu())
        labels.append(label[:, 0].round().to(torch.uint8).cpu())
    return torch.cat(preds), torch.cat(labels)


def pooled_dice(
    pred: torch.Tensor,
    label: torch.Tensor,
    volumes: Sequence[str],
    num_classes: int | None = None,
    regions: Sequence[Sequence[int]] | None = None,
) -> np.ndarray:
    """Dice per volume and class (or region) with the slices of a volume pooled (the Dice of the stacked volume, as
    in ACDC's and BraTS' 3D evaluation).

    ``pred``, ``label`` ``(N, H, W)`` class maps; ``volumes`` names the volume of each slice. Scored structures: each
    class ``0 .. num_classes - 1``, or each region of ``regions`` (a set of class indices, e.g. BraTS whole tumour =
    classes 1, 2, 3; regions may overlap). Returns ``(V, S)`` float64, volumes in sorted name order, NaN where a
    structure is absent from both prediction and ground truth (an empty ground truth with a non-empty prediction
    scores 0).
    """
    if (num_classes is None) == (regions is None):
        raise ValueError(f"pooled_dice: expected num_classes or regions, found {num_classes} and {regions}")
    structures = [(c,) for c in range(num_classes)] if regions is None else [tuple(r) for r in regions]
    names = sorted(set(volumes))
    index = torch.as_tensor([names.index(v) for v in volumes])
    inter = torch.zeros(len(names), len(structures), dtype=torch.float64)
    total = torch.zeros_like(inter)
    for s, classes in enumerate(structures):
        members = torch.as_tensor(classes, dtype=pred.dtype)
        p, g = torch.isin(pred, members).flatten(1), torch.isin(label, members).flatten(1)
        inter[:, s].index_add_(0, index, (p & g).sum(1).double())
        total[:, s].index_add_(0, index, (p.sum(1) + g.sum(1)).double())
    dice = (2 * inter / total).numpy()
    return np.where(total.numpy() > 0, dice, np.nan)


def volume_dice(
    network: nn.Module,
    batches: Sequence[tuple[torch.Tensor, torch.Tensor]],
    volumes: Sequence[str],
    mask: torch.Tensor,
    num_classes: int,
    pe_dim: int = -1,
    amp: bool | str = False,
    normalize: Normalize | None = zscore_slices,
) -> np.ndarray:
    """Dice per volume and class of the network on images undersampled with ``mask``: :func:`predict_slices`, then
    :func:`pooled_dice` (``(V, num_classes)``, NaN where a class is absent from both prediction and ground truth)."""
    pred, label = predict_slices(network, batches, mask, pe_dim, amp, normalize)
    return pooled_dice(pred, label, volumes, num_classes)


def _surface_points(mask: np.ndarray, positions: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """The surface voxels of ``mask`` ``(H, W, D)``, whose slices lie at the (sorted) indices ``positions`` ``(D,)``
    of their volume, as points ``(n, 3)`` in the units of ``scale`` (the size of a voxel along H, W and one slice
    index). Each run of consecutive indices is a stack of its own: a voxel is on the surface when a face neighbour
    (6 in 3D) is outside the mask or outside its run, so a run's first and last slices face the outside as the end
    slices of a volume do (MONAI's ``get_mask_edges``: ``mask ^ binary_erosion(mask)``, zeros beyond the border)."""
    runs = np.split(np.arange(len(positions)), np.flatnonzero(np.diff(positions) != 1) + 1)
    points = []
    for run in runs:
        part = mask[..., run]
        h, w, d = np.nonzero(part & ~binary_erosion(part))
        points.append(np.stack([h, w, positions[run][d]], axis=1) * scale)
    return np.concatenate(points)


def _slice_set_distances(
    pred: np.ndarray, label: np.ndarray, positions: np.ndarray, spacing: tuple[float, ...] | None, num_classes: int
) -> SurfaceDistances:
    """HD95 and ASSD of one volume whose slices are not contiguous, each foreground class from the surface points of
    :func:`_surface_points` at their true positions; the definitions and the empty-mask convention of
    :func:`~common.metrics.surface_distances` (distances to the nearest surface point of the other mask, exact
    Euclidean by a k-d tree). ``pred``, ``label`` ``(H, W, D)`` class maps; returns ``(1, num_classes - 1)``."""
    scale = np.ones(3) if spacing is None else np.asarray(spacing, dtype=np.float64)
    if scale.shape != (3,) or not np.all(np.isfinite(scale) & (scale > 0)):
        raise ValueError(f"spacing: expected 3 positive sizes (H, W, slice thickness), found {scale.tolist()}")
    shape = (1, num_classes - 1)
    hd95, assd = np.full(shape, np.nan), np.full(shape, np.nan)
    pred_empty, label_empty = np.ones(shape, bool), np.ones(shape, bool)
    for k, c in enumerate(range(1, num_classes)):
        p, g = pred == c, label == c
        pred_empty[0, k], label_empty[0, k] = not p.any(), not g.any()
        if pred_empty[0, k] or label_empty[0, k]:
            continue
        a, b = _surface_points(p, positions, scale), _surface_points(g, positions, scale)
        to_label, to_pred = KDTree(b).query(a)[0], KDTree(a).query(b)[0]
        hd95[0, k] = max(float(np.quantile(d, 0.95)) for d in (to_label, to_pred))
        assd[0, k] = float(np.concatenate([to_label, to_pred]).mean())
    return SurfaceDistances(hd95, assd, pred_empty, label_empty, surface_unit(spacing))


def volume_surface_distances(
    pred: torch.Tensor,
    label: torch.Tensor,
    items: Sequence[dict],
    num_classes: int | None = None,
    regions: Sequence[Sequence[int]] | None = None,
) -> SurfaceDistances:
    """HD95 and ASSD per volume and foreground class, or per region (:func:`~common.metrics.surface_distances`),
    with every slice at its true position in its volume.

    ``pred``, ``label`` ``(N, H, W)`` class maps of the slice dicts ``items`` (same order, each with ``patient``,
    ``phase``, ``slice``: its index along the volume's slice axis, and ``spacing``: mm per pixel along H and W and the
    slice thickness). Volumes in sorted ``patient/phase`` order, as :func:`pooled_dice`. A volume's slices, sorted by
    ``slice``:

    - contiguous (``slice`` k, k + 1, ...; every slice of a volume, as ACDC's): stacked into ``(H, W, D)`` and scored
      by :func:`~common.metrics.surface_distances` (MONAI's ``get_edge_surface_distance``) with the spacing.
    - with gaps (a subset, e.g. BraTS' ``slices_per_case`` evenly spaced slices): the surface voxels of each run of
      consecutive slices (its end slices facing the outside, as a volume's end slices do) become points ``(n, 3)``
      at ``(h, w, slice)`` times the spacing, and the distances are those between the two point sets, with the same
      definitions; so slices 0 and 16 are 16 slice thicknesses apart, not one. This is the surface of the slices
      kept, not of the whole volume: a subset misses the surface between its slices.

    Distances are in mm, or in pixels (1 per pixel and per slice index) when no item has ``spacing``. Returns
    ``(V, num_classes - 1)`` arrays (background left out), or ``(V, len(regions))`` with ``regions`` (sets of class
    indices, as :func:`pooled_dice`: each region scored as a binary mask); NaN and counted where a mask is empty (see
    :data:`~common.metrics.EMPTY_MASK_CONVENTION`).
    """
    if (num_classes is None) == (regions is None):
        raise ValueError(
            f"volume_surface_distances: expected num_classes or regions, found {num_classes} and {regions}"
        )
    if regions is not None:
        parts = []
        for classes in regions:
            members = torch.as_tensor(tuple(classes), dtype=pred.dtype)
            binary = [torch.isin(x, members).to(torch.uint8) for x in (pred, label)]
            parts.append(volume_surface_distances(*binary, items, num_classes=2))
        fields = ("hd95", "assd", "pred_empty", "label_empty")
        return SurfaceDistances(
            *(np.concatenate([getattr(d, f) for d in parts], axis=1) for f in fields), unit=parts[0].unit
        )
    if len(items) != len(pred) or pred.shape != label.shape:
        raise ValueError(
            f"pred, label, items: expected {len(items)} slices (one per item) of equal shape, found "
            f"{tuple(pred.shape)} and {tuple(label.shape)}"
        )
    with_slice = ["slice" in d for d in items]
    if not all(with_slice):
        raise ValueError(
            f"items: expected 'slice' (the index along the volume's slice axis) in every slice dict, found it in "
            f"{sum(with_slice)} of {len(items)}"
        )
    with_spacing = ["spacing" in d for d in items]
    if any(with_spacing) and not all(with_spacing):
        raise ValueError(
            f"items: expected 'spacing' in every slice dict or in none, found it in {sum(with_spacing)} "
            f"of {len(items)}"
        )
    for name, t in (("pred", pred), ("label", label)):
        if t.numel() and (t.min() < 0 or t.max() >= num_classes or (t.is_floating_point() and (t % 1).any())):
            raise ValueError(
                f"{name}: expected integer labels in [0, {num_classes}), found values in "
                f"[{float(t.min())}, {float(t.max())}]"
            )
    keys = volume_keys(items)
    parts = []
    # one call per volume: the depths differ between volumes (surface_distances loops over volumes anyway)
    for name in sorted(set(keys)):
        members = sorted((int(items[i]["slice"]), i) for i, k in enumerate(keys) if k == name)
        positions = np.asarray([n for n, _ in members])
        if len(set(positions.tolist())) != len(positions):
            raise ValueError(f"items: expected distinct 'slice' numbers in volume {name}, found {positions.tolist()}")
        order = [i for _, i in members]
        spacing = None
        if all(with_spacing):
            sp = {tuple(np.asarray(items[i]["spacing"], dtype=np.float64).tolist()) for i in order}
            if len(sp) != 1:
                raise ValueError(f"items: expected one spacing per volume, found {sorted(sp)} in volume {name}")
            spacing = sp.pop()
        p, g = pred[order].permute(1, 2, 0), label[order].permute(1, 2, 0)
        if positions[-1] - positions[0] == len(positions) - 1:  # contiguous: a regular grid
            parts.append(surface_distances(p[None, None], g[None, None], spacing, num_classes=num_classes))
        else:
            parts.append(_slice_set_distances(p.cpu().numpy(), g.cpu().numpy(), positions, spacing, num_classes))
    fields = ("hd95", "assd", "pred_empty", "label_empty")
    return SurfaceDistances(*(np.concatenate([getattr(d, f) for d in parts]) for f in fields), unit=parts[0].unit)


def fine_tune(
    network: nn.Module,
    batches: Sequence[tuple[torch.Tensor, torch.Tensor]],
    mask: torch.Tensor,
    epochs: int,
    learning_rate: float = 1e-4,
    loss: str = "dice_ce",
    pe_dim: int = -1,
    amp: bool | str = False,
    seed: int = 0,
    normalize: Normalize | None = zscore_slices,
) -> nn.Module:
    """A copy of ``network`` fine-tuned on images undersampled with ``mask`` (AdamW; 0.75 Dice + 0.25 CE).

    ``amp`` as :func:`~common.apps.igs.autocast_settings`: bfloat16 autocast where supported; float16 (older GPUs)
    with MONAI-style dynamic loss scaling (``torch.amp.GradScaler``), so no gradient underflows.
    """
    net = copy.deepcopy(network).train()
    for p in net.parameters():
        p.requires_grad_(True)
    opt = torch.optim.AdamW(net.parameters(), lr=learning_rate)
    loss_fn = igs_loss(loss)
    dtype, _ = autocast_settings(mask.device, amp)
    scaler = torch.amp.GradScaler(mask.device.type, enabled=dtype == torch.float16)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        for i in torch.randperm(len(batches), generator=gen).tolist():
            spectrum, label = batches[i]
            image = network_input(spectrum, mask, pe_dim, normalize)
            value = loss_fn(network_logits(net, image, dtype), label)
            opt.zero_grad(set_to_none=True)
            scaler.scale(value).backward()
            scaler.step(opt)
            scaler.update()
    return net.eval()
