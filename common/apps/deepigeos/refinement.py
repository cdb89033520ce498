"""One DeepIGeoS refinement step: geodesic maps of the clicks, R-Net and CRF-Net(fu) on the region of interest
around the current segmentation and the clicks, pasted back into the whole volume."""

from __future__ import annotations

import time
from collections.abc import Sequence
from numbers import Integral
from typing import NamedTuple

import torch
from monai.networks.utils import one_hot
from monai.transforms.utils import generate_spatial_bounding_box
from monai.utils.type_conversion import convert_to_tensor
from torch import nn

from common.apps.deepigeos.cache import RefinementCache
from common.networks.blocks import CRFNet
from common.transforms import geodesic_map

__all__ = ["Refinement", "refinement_box", "refine"]


class Refinement(NamedTuple):
    """Result of :func:`refine`.

    probabilities: ``(C, *S)`` float32 over the whole volume; outside :attr:`box` the one-hot of the input label.
    box: slices of the region of interest in ``S`` (all ``slice(0, 0)`` when there was no click: nothing refined).
    seconds: wall time of each part that ran (``"crop"``, ``"geodesic"``, ``"network"``, ``"crf"``, ``"paste"``;
        only ``"crop"`` without clicks), with CUDA synchronised at each boundary.
    """

    probabilities: torch.Tensor
    box: tuple[slice, ...]
    seconds: dict[str, float]


def refinement_box(label: torch.Tensor, seeds: torch.Tensor, margin: int | Sequence[int]) -> tuple[slice, ...]:
    """Bounding box of the foreground of ``label`` and of every seed, grown by ``margin`` voxels per axis and
    clipped to the volume.

    Args:
        label: ``(*S)`` or ``(1, *S)`` segmentation (non-zero = foreground).
        seeds: ``(K, *S)`` seed maps (non-zero at the clicks).
        margin: voxels added on each side, one for all axes or one per axis.

    Returns: one slice per spatial axis; all empty (``slice(0, 0)``) when there is neither foreground nor seed.
    """
    label = convert_to_tensor(label, track_meta=False)
    seeds = convert_to_tensor(seeds, track_meta=False)
    spatial = tuple(seeds.shape[1:])
    label = label.reshape(spatial) if label.numel() == seeds[0].numel() else label
    if tuple(label.shape) != spatial:
        raise ValueError(f"label: expected the spatial shape of seeds {spatial}, found {tuple(label.shape)}")
    margins = [int(margin)] * len(spatial) if isinstance(margin, int) else [int(m) for m in margin]
    if len(margins) != len(spatial) or min(margins) < 0:
        raise ValueError(f"margin: expected {len(spatial)} non-negative values, found {margin}")
    region = ((label != 0) | (seeds != 0).any(0))[None]
    start, end = generate_spatial_bounding_box(region, margin=margins, allow_smaller=True)
    return tuple(slice(s, e) for s, e in zip(start, end))


def _clock(device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


def refine(
    image: torch.Tensor,
    label: torch.Tensor,
    seeds: torch.Tensor,
    network: nn.Module,
    num_classes: int,
    crf: CRFNet | None = None,
    margin: int | Sequence[int] = 16,
    spacing: Sequence[float] | None = None,
    geodesic_backend: str = "fastgeodis",
    lamb: float = 1.0,
    scale: float = 1.0,
    cache: RefinementCache | None = None,
) -> Refinement:
    """Refine ``label`` with the user's clicks, as DeepIGeoS' second stage, on the region of interest only.

    The region is :func:`refinement_box` of the label and the clicks. Inside it: the geodesic distance maps of the
    background and foreground clicks (:func:`common.transforms.geodesic_map`; paths stay inside the region), the
    R-Net input ``[image, label, background map, foreground map]``, ``network``'s logits, and ``crf`` (when given)
    turning them into probabilities with the clicks clamped to their label (CRF-Net(fu)); without ``crf`` the
    softmax of the logits. Outside the region the result is the one-hot of ``label``: every foreground voxel and
    every click lies inside, so only background is left there. One box covers everything, so the time grows with
    the box (a false positive far from the tumour widens it), not with the volume. Without any click the result
    is the one-hot of ``label`` and nothing is run. Runs under ``torch.inference_mode`` on the device of
    ``image``; pass the trained R-Net in eval mode, through :func:`common.networks.utils.optimize_for_inference`
    for speed.

    Args:
        image: ``(1, *S)`` normalised image (DeepIGeoS: zero mean, unit variance over the brain), ``S`` 2D or 3D.
        label: ``(*S)`` or ``(1, *S)`` current segmentation, integer (or bool) class indices in
            ``[0, num_classes)`` (P-Net's result or the last step's argmax, not probabilities).
        seeds: ``(2, *S)`` 0/1 background (channel 0) and foreground (channel 1) click maps, no voxel in both, as
            :func:`common.transforms.clicks_to_seeds` makes them.
        network: R-Net: ``(1, 4, *R) -> (1, num_classes, *R)`` logits.
        num_classes: ``C``, classes including background (``network``'s output channels), at least 2.
        crf: CRF-Net(fu) on the logits with the image as features, or ``None``. The clicks are clamped as the
            one-hot of background / foreground, so ``crf`` needs ``num_classes == 2`` (and a CRF of 2 classes).
        margin: voxels of context around the box of label and clicks, per axis or one for all.
        spacing: voxel size per spatial axis for the geodesic maps (``None``: 1).
        geodesic_backend: the ``backend`` of :func:`common.transforms.geodesic_map`.
        lamb: the ``lamb`` of :func:`common.transforms.geodesic_map`: 1 geodesic (DeepIGeoS), 0 Euclidean maps (the
            ablation; an R-Net trained on the same kind of maps).
        scale: the maps are ``1 - exp(-d / scale)`` (:func:`common.transforms.geodesic_map`): 1 for geodesic maps; the
            Euclidean ablation uses a larger one (``d`` in mm) so that its maps spread over the box as geodesic ones
            do, the value its R-Net was trained with.
        cache: keeps the geodesic maps between the steps of one user on one image (the same ``image`` object each
            step): only the maps of new clicks are computed while the box stays (:class:`RefinementCache`, which
            states how close they are to the maps computed at once). ``None``: both maps computed afresh.

    Returns: :class:`Refinement` with ``(num_classes, *S)`` float32 probabilities on the device of ``image``.

    Raises: ``ValueError`` naming the argument for shapes, a floating-point ``label`` or one outside
    ``[0, num_classes)``, seeds other than 0/1 or marking a voxel both background and foreground, a ``crf`` with
    ``num_classes != 2`` or of another class count, and a ``network`` whose output is not ``num_classes`` channels.
    """
    source = image  # what the cache recognises
    image = convert_to_tensor(image, dtype=torch.float32, track_meta=False)
    device = image.device
    t0 = _clock(device)  # the checks below count as "crop"
    seeds = convert_to_tensor(seeds, track_meta=False).to(device)
    label = convert_to_tensor(label, track_meta=False).to(device)
    spatial = tuple(image.shape[1:])
    if image.shape[0] != 1 or len(spatial) not in (2, 3) or tuple(seeds.shape) != (2, *spatial):
        raise ValueError(
            f"image, seeds: expected (1, *S) and (2, *S) with 2 or 3 spatial dims, found {tuple(image.shape)} and "
            f"{tuple(seeds.shape)}"
        )
    _check_classes(label, num_classes, crf)
    _check_seeds(seeds)
    seconds: dict[str, float] = {}
    box = refinement_box(label, seeds, margin)
    label = label.reshape(spatial).long()
    if not seeds.any():  # no click: nothing to refine, the label stands
        out = one_hot(label[None], num_classes, dtype=torch.float32, dim=0)
        return Refinement(out, tuple(slice(0, 0) for _ in spatial), {"crop": _clock(device) - t0})
    with torch.inference_mode():
        region = (slice(None), *box)
        img, sd = image[region], seeds[region].to(torch.float32)
        lab = label[box].to(torch.float32)[None]
        t1 = _clock(device)
        seconds["crop"] = t1 - t0
        if cache is None:
            maps = geodesic_map(img, sd, spacing=spacing, lamb=lamb, backend=geodesic_backend, scale=scale)
        else:
            maps = cache.geodesic_maps(source, seeds, box, spacing, lamb, geodesic_backend, scale)
        t2 = _clock(device)
        seconds["geodesic"] = t2 - t1
        logits = network(torch.cat([img, lab, maps])[None])
        if logits.shape[1] != num_classes:
            raise ValueError(
                f"network: expected {num_classes} output channels (num_classes), found {logits.shape[1]} "
                f"(logits {tuple(logits.shape)})"
            )
        t3 = _clock(device)
        seconds["network"] = t3 - t2
        if crf is None:
            probs = torch.softmax(logits, 1)
        else:
            features = img[None].to(logits.dtype)
            clamp = sd[None].to(logits.dtype)
            if cache is None:
                probs = crf(logits, features, clamp)
            else:  # the pair weights depend on the image's box only: kept while it stays, the new shell when it grows
                weights = cache.crf_weights(crf, source, box, features)
                probs = crf(logits, features, clamp, weights)
        t4 = _clock(device)
        seconds["crf"] = t4 - t3
        out = one_hot(label[None], num_classes, dtype=torch.float32, dim=0)
        out[region] = probs[0]
        seconds["paste"] = _clock(device) - t4
    return Refinement(out, box, seconds)


def _values(t: torch.Tensor, most: int = 6) -> str:
    """The distinct values of ``t`` for an error message: all of them, or the first ``most`` and their count."""
    values = t.unique()
    shown = ", ".join(f"{v:g}" for v in values[:most].tolist())
    return f"[{shown}]" if len(values) <= most else f"[{shown}, ...] ({len(values)} distinct)"


def _check_classes(label: torch.Tensor, num_classes: int, crf: CRFNet | None) -> None:
    """``label`` integer indices in ``[0, num_classes)``; ``crf`` (clamping background / foreground) binary."""
    if isinstance(num_classes, bool) or not isinstance(num_classes, Integral) or num_classes < 2:
        raise ValueError(f"num_classes: expected an integer >= 2 (background included), found {num_classes!r}")
    if label.dtype.is_floating_point:
        raise ValueError(
            f"label: expected integer class indices (e.g. the argmax of probabilities), found dtype {label.dtype} "
            f"with values {_values(label)}; a label read from disk as float with whole values: pass label.long()"
        )
    if label.numel() and (int(label.min()) < 0 or int(label.max()) >= num_classes):
        raise ValueError(f"label: expected class indices in [0, {num_classes}), found {_values(label)}")
    if crf is None:
        return
    if num_classes != 2:
        raise ValueError(
            f"crf: expected num_classes == 2 (the clicks are clamped as background / foreground), found "
            f"num_classes={num_classes}; refine without a CRF for more classes"
        )
    crf_classes = crf.compatibility.shape[0]
    if crf_classes != num_classes:
        raise ValueError(f"crf: expected a CRF of num_classes={num_classes} classes, found {crf_classes}")


def _check_seeds(seeds: torch.Tensor) -> None:
    """0/1 background / foreground maps with no voxel in both."""
    if ((seeds != 0) & (seeds != 1)).any():
        raise ValueError(f"seeds: expected 0/1 click maps, found values {_values(seeds)} (dtype {seeds.dtype})")
    both = (seeds[0] != 0) & (seeds[1] != 0)
    if both.any():
        where = tuple(both.nonzero()[0].tolist())
        raise ValueError(
            f"seeds: expected no voxel clicked as both background (channel 0) and foreground (channel 1), found "
            f"{int(both.sum())}, e.g. at {where}"
        )
