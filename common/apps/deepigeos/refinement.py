"""One DeepIGeoS refinement step: geodesic maps of the clicks, R-Net and CRF-Net(fu) on the region of interest
around the current segmentation and the clicks, pasted back into the whole volume."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import NamedTuple

import torch
from monai.networks.utils import one_hot
from monai.transforms.utils import generate_spatial_bounding_box
from monai.utils.type_conversion import convert_to_tensor
from torch import nn

from common.networks.blocks import CRFNet
from common.transforms import geodesic_map

__all__ = ["Refinement", "refinement_box", "refine"]


class Refinement(NamedTuple):
    """Result of :func:`refine`.

    probabilities: ``(C, *S)`` float32 over the whole volume; outside :attr:`box` the one-hot of the input label.
    box: slices of the region of interest in ``S`` (empty when there was nothing to refine).
    seconds: wall time of each part (``"crop"``, ``"geodesic"``, ``"network"``, ``"crf"``, ``"paste"``), with
        CUDA synchronised at each boundary.
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
    crf: CRFNet | None = None,
    margin: int | Sequence[int] = 16,
    spacing: Sequence[float] | None = None,
    geodesic_backend: str = "auto",
) -> Refinement:
    """Refine ``label`` with the user's clicks, as DeepIGeoS' second stage, on the region of interest only.

    The region is :func:`refinement_box` of the label and the clicks. Inside it: the geodesic distance maps of the
    background and foreground clicks (:func:`common.transforms.geodesic_map`, normalised; paths stay inside the
    region), the R-Net input ``[image, label, background map, foreground map]``, ``network``'s logits, and
    ``crf`` (when given) turning them into probabilities with the clicks clamped to their label (CRF-Net(fu));
    without ``crf`` the softmax of the logits. Outside the region the result is the one-hot of ``label``: every
    foreground voxel and every click lies inside, so only background is left there. One box covers everything,
    so the time grows with the box (a false positive far from the tumour widens it), not with the volume.
    Runs under ``torch.inference_mode`` on the device of ``image``; pass the trained R-Net through
    :func:`common.networks.utils.optimize_for_inference` for speed.

    Args:
        image: ``(1, *S)`` normalised image (DeepIGeoS: zero mean, unit variance over the brain), ``S`` 2D or 3D.
        label: ``(*S)`` or ``(1, *S)`` current segmentation, class indices (P-Net's result or the last step's).
        seeds: ``(2, *S)`` background (channel 0) and foreground (channel 1) click maps, as
            :func:`common.transforms.clicks_to_seeds` makes them.
        network: R-Net: ``(1, 4, *R) -> (1, C, *R)`` logits.
        crf: CRF-Net(fu) on the logits with the image as features, or ``None``.
        margin: voxels of context around the box of label and clicks, per axis or one for all.
        spacing: voxel size per spatial axis for the geodesic maps (``None``: 1).
        geodesic_backend: ``"auto"``, ``"geodistk"`` or ``"fastgeodis"``.

    Returns: :class:`Refinement` with ``(C, *S)`` probabilities on the device of ``image``.
    """
    image = convert_to_tensor(image, dtype=torch.float32, track_meta=False)
    device = image.device
    seeds = convert_to_tensor(seeds, track_meta=False).to(device)
    label = convert_to_tensor(label, track_meta=False).to(device)
    spatial = tuple(image.shape[1:])
    if image.shape[0] != 1 or len(spatial) not in (2, 3) or tuple(seeds.shape) != (2, *spatial):
        raise ValueError(
            f"image, seeds: expected (1, *S) and (2, *S) with 2 or 3 spatial dims, found {tuple(image.shape)} and "
            f"{tuple(seeds.shape)}"
        )
    seconds: dict[str, float] = {}
    t0 = _clock(device)
    box = refinement_box(label, seeds, margin)
    label = label.reshape(spatial).long()
    with torch.inference_mode():
        num_classes = _num_classes(network, image)
        if int(label.max()) >= num_classes or int(label.min()) < 0:  # before any costly work
            raise ValueError(f"label: expected class indices in [0, {num_classes}), found {label.unique().tolist()}")
        if any(s.stop <= s.start for s in box):
            out = one_hot(label[None], num_classes, dtype=torch.float32, dim=0)
            return Refinement(out, box, {"crop": _clock(device) - t0})
        region = (slice(None), *box)
        img, sd = image[region], seeds[region]
        lab = label[box].to(torch.float32)[None]
        t1 = _clock(device)
        seconds["crop"] = t1 - t0
        maps = geodesic_map(img, sd, spacing=spacing, backend=geodesic_backend)
        t2 = _clock(device)
        seconds["geodesic"] = t2 - t1
        logits = network(torch.cat([img, lab, maps])[None])
        t3 = _clock(device)
        seconds["network"] = t3 - t2
        probs = torch.softmax(logits, 1) if crf is None else crf(logits, img[None], sd[None].to(logits.dtype))
        t4 = _clock(device)
        seconds["crf"] = t4 - t3
        out = one_hot(label[None], num_classes, dtype=torch.float32, dim=0)
        out[region] = probs[0]
        seconds["paste"] = _clock(device) - t4
    return Refinement(out, box, seconds)


def _num_classes(network: nn.Module, image: torch.Tensor) -> int:
    """Output classes of ``network``, from a forward pass on one voxel (padded convolutions keep the size)."""
    probe = torch.zeros((1, 4, *([1] * (image.ndim - 1))), device=image.device)
    return int(network(probe).shape[1])
