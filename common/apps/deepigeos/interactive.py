"""One DeepIGeoS refinement step on an image as loaded from disk (the call a MONAI Label infer task makes): the
bundle's preprocessing (crop to the brain, normalisation within it), :func:`refine`, and the label pasted back on the
input grid."""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

import numpy as np
import torch
from monai.transforms import CropForeground
from monai.utils.type_conversion import convert_to_tensor
from torch import nn

from common.apps.deepigeos.cache import RefinementCache
from common.apps.deepigeos.refinement import refine
from common.apps.deepigeos.samples import image_spacing
from common.networks.blocks import CRFNet
from common.transforms import ZScoreForeground, clicks_to_seeds

__all__ = ["brain_box", "refine_clicks", "voxel_indices"]


def brain_box(image: torch.Tensor, brain_margin: int = 0) -> tuple[slice, ...]:
    """The crop of the bundle's preprocessing (``CropForegroundd(source_key="image", margin=brain_margin,
    allow_smaller=True)``): the bounding box of the voxels above 0 (the skull-stripped brain), grown by
    ``brain_margin`` and clipped to the image. ``image`` ``(C, *S)``."""
    start, end = CropForeground(margin=brain_margin, allow_smaller=True).compute_bounding_box(image)
    return tuple(slice(int(s), int(e)) for s, e in zip(start, end))


def voxel_indices(points: Sequence[Sequence[int]] | None, name: str, shape: Sequence[int]) -> np.ndarray:
    """Check user clicks ``[[i, j, k], ...]`` (voxel indices of an image of spatial ``shape``) -> ``(N, len(shape))``
    int64; None or empty -> ``(0, len(shape))``. Every coordinate must be an integer (not a bool, not a float such
    as 1.0) inside the image; otherwise ValueError naming ``name`` and the offending clicks (checked on the integers
    as given, so an index too large for int64 is refused as outside, not overflowed)."""
    shape = tuple(int(n) for n in shape)
    pts = [] if points is None else points
    if not isinstance(pts, (list, tuple, np.ndarray)) or not all(
        isinstance(c, (list, tuple, np.ndarray))
        and len(c) == len(shape)
        and all(isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_)) for v in c)
        for c in pts
    ):
        raise ValueError(f"{name}: expected voxel indices [[i, j, k], ...] of a {len(shape)}D image, found {points!r}")
    outside = [[int(v) for v in c] for c in pts if any(not 0 <= int(v) < n for v, n in zip(c, shape))]
    if outside:
        raise ValueError(f"{name}: expected voxel indices inside the image {shape}, found {outside[:3]}")
    return np.asarray(pts, dtype=np.int64).reshape(-1, len(shape))


def refine_clicks(
    image: torch.Tensor,
    label: torch.Tensor,
    foreground: Sequence[Sequence[int]] | None,
    background: Sequence[Sequence[int]] | None,
    network: nn.Module,
    crf: CRFNet | None = None,
    brain_margin: int = 0,
    rnet_background: float = -5.0,
    margin: int | Sequence[int] = 16,
    spacing: Sequence[float] | None = None,
    lamb: float = 1.0,
    geodesic_backend: str = "fastgeodis",
    scale: float = 1.0,
    cache: RefinementCache | None = None,
) -> torch.Tensor:
    """Refine ``label`` with the user's clicks on the input grid: image + current label + clicks -> new label.

    The image is preprocessed as the bundle's configs do for R-Net (:func:`brain_box`, then
    :class:`~common.transforms.ZScoreForeground`: zero mean and unit variance over the brain, ``rnet_background``
    outside it), the label and the clicks are
    cropped with it, :func:`~common.apps.deepigeos.refine` runs R-Net (and CRF-Net(fu) with every click clamped) on
    the box around label and clicks, and its argmax is pasted back: outside the brain crop the label is left as it
    was. As in DeepIGeoS (and in the bundle's evaluation), ``label`` is the initial (automatic) segmentation and the
    clicks are all of the user's clicks so far; the label of an earlier refinement may be passed instead.

    Args:
        image: ``(1, *S)`` FLAIR as loaded (channel first; a MetaTensor gives the voxel size), ``S`` 3D (or 2D).
        label: ``(*S)`` or ``(1, *S)`` segmentation to refine (0 background, 1 tumour), the automatic one.
        foreground, background: clicks ``[[i, j, k], ...]`` in voxel indices of ``image`` (MONAI Label's
            ``{"foreground": [...], "background": [...]}`` request parameters), or None / empty.
        network: the R-Net (eval mode), ``(1, 4, *R) -> (1, 2, *R)`` logits.
        crf: CRF-Net(fu), or None.
        brain_margin: the bundle's ``brain_margin`` (voxels around the brain in its crop).
        rnet_background: the bundle's ``rnet_background`` (the value outside the brain in R-Net's image).
        margin, spacing, lamb, geodesic_backend, scale: as in :func:`~common.apps.deepigeos.refine` (the bundle's
            ``refine_margin``, ``geodesic_lambda``, ``geodesic_backend``, ``geodesic_scale``); ``spacing`` None: the
            image's ``pixdim``.
        cache: one per user and image, passed to every call with the same ``image`` object: keeps the preprocessed
            image and the geodesic maps of the clicks so far, so that a step computes the maps of its new clicks
            only (see :class:`~common.apps.deepigeos.RefinementCache`; the maps then differ from those computed at
            once within the geodesic stopping rule's error). It pays when ``label`` stays the same (the automatic
            one) and the clicks accumulate: the refinement box, and with it the maps, change with the label.
            ``None``: everything computed afresh.

    Returns: ``(*S)`` uint8 label (0 / 1) on the input grid, on the CPU.

    Raises: ``ValueError`` for clicks outside the image or outside the brain crop (the networks never saw that
    region), and for what :func:`refine` rejects.
    """
    spacing = image_spacing(image, spacing)
    img = convert_to_tensor(image, dtype=torch.float32, track_meta=False)
    spatial = tuple(img.shape[1:])
    lab = convert_to_tensor(label, track_meta=False).cpu()
    if lab.numel() != int(np.prod(spatial)) or img.shape[0] != 1:
        raise ValueError(f"image, label: expected (1, *S) and (*S), found {tuple(img.shape)} and {tuple(lab.shape)}")
    lab = lab.reshape(spatial)
    if lab.dtype.is_floating_point:  # a label read from disk: whole values only
        if bool((lab != lab.round()).any()):
            raise ValueError(
                f"label: expected class indices 0 / 1, found non-integer values {lab.unique()[:6].tolist()}"
            )
        lab = lab.long()
    fg = voxel_indices(foreground, "foreground", spatial)
    bg = voxel_indices(background, "background", spatial)
    preprocess = partial(_preprocess, img, brain_margin, rnet_background)
    box, crop = (
        preprocess() if cache is None else cache.preprocessed(image, (brain_margin, rnet_background), preprocess)
    )
    offset = np.array([s.start for s in box])
    size = np.array([s.stop - s.start for s in box])
    clicks = np.concatenate([fg, bg])
    outside = clicks[((clicks - offset < 0) | (clicks - offset >= size)).any(1)]
    if len(outside):
        raise ValueError(
            f"foreground, background: expected clicks inside the brain crop {[(s.start, s.stop) for s in box]}, "
            f"found {outside[:3].tolist()}"
        )
    sub = lab[box].long()
    seeds = torch.from_numpy(clicks_to_seeds(fg - offset, bg - offset, tuple(int(n) for n in size)))
    out = refine(
        crop,
        sub,
        seeds,
        network,
        2,
        crf=crf,
        margin=margin,
        spacing=spacing,
        geodesic_backend=geodesic_backend,
        lamb=lamb,
        scale=scale,
        cache=cache,
    )
    result = lab.to(torch.uint8, copy=True)  # the caller's label is left as it is
    # outside the refinement box the probabilities are the one-hot of the label: its argmax is the label already
    result[box][out.box] = out.probabilities[(slice(None), *out.box)].argmax(0).cpu().to(torch.uint8)
    return result


def _preprocess(
    image: torch.Tensor, brain_margin: int, rnet_background: float
) -> tuple[tuple[slice, ...], torch.Tensor]:
    """The bundle's preprocessing for R-Net: ``image`` ``(1, *S)`` float32 -> (:func:`brain_box`, the crop
    ``(1, *B)`` normalised by :class:`~common.transforms.ZScoreForeground`)."""
    box = brain_box(image.cpu(), brain_margin)
    return box, ZScoreForeground(background=rnet_background)(image[(slice(None), *box)])
