"""What one DeepIGeoS refinement step can reuse from the step before on the same image: the preprocessed image and
the geodesic maps of the clicks already made."""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence

import torch
from monai.utils.type_conversion import convert_to_tensor

from common.networks.blocks import CRFNet
from common.transforms import geodesic_map

__all__ = ["RefinementCache"]

Preprocessed = tuple[tuple[slice, ...], torch.Tensor]
"""The brain crop's slices and the normalised crop ``(1, *B)``."""


class RefinementCache:
    """Results kept between the refinement steps of one user on one image: pass the same instance to every
    :func:`~common.apps.deepigeos.refine_clicks` (or :func:`~common.apps.deepigeos.refine`) call of that user and
    image, with the same image object each time.

    The preprocessed image (:meth:`preprocessed`) is kept for the image object and settings it was made from.

    The geodesic maps (:meth:`geodesic_maps`) are kept per channel with the set of clicks they cover. The distance to
    a set of seeds is the minimum over its parts, and ``1 - exp(-d / scale)`` rises with ``d``, so a channel's map
    is the voxel-wise minimum of the maps of any split of its clicks: a step runs the geodesic map of its new clicks
    only (one run per channel that got new clicks, none when no click is new) and takes the minimum with the kept
    map. Maps are computed inside the refinement box (paths stay in the box, as R-Net was trained), so they hold for
    one image object, one box and one set of map settings: when any of these changes (the box grows with a click
    outside it, or with another label), both channels are recomputed from all their clicks, and when a kept click
    is no longer sent (undo, or only the new clicks sent), its channel is; this costs what the step costs without a
    cache. While the box stays and the clicks only accumulate, a click costs one map run instead of one per channel
    with clicks.

    The maps are raster-scan approximations that stop at a relative tolerance (:func:`common.transforms.geodesic_map`):
    the minimum of maps computed apart equals the map of all seeds at once at the exact fixed point (bit for bit),
    and lies within the stopping rule's error of it otherwise. On the synthetic 240x240x155 case of
    ``benchmarks/bench_deepigeos.py`` (tumour 60 voxels across, a 78x102x74 box, 5 + 4 clicks, one map per click):
    at most 0.0063 apart on the ``[0, 1]`` scale (mean 2e-5), the combined maps the closer to the exact ones (at most
    0.0044 off, against 0.0063 for the maps computed at once).

    CRF-Net(fu)'s pair weights (:meth:`crf_weights`) depend on the image's box only, not on the clicks: they are
    kept for one CRF object, image object and box, and when a click widens the box only the shell around the kept
    box is computed (equal to the whole box's weights bit for bit).

    One caller at a time (no locking). The image must not be changed in place while the cache is in use (it is
    recognised by object identity). Memory: the preprocessed image, two float32 maps of the box and the CRF's pair weights (one map of the box per
    window offset) (:attr:`nbytes`).
    """

    def __init__(self) -> None:
        self._source: object | None = None
        self._source_settings: Hashable = None
        self._preprocessed: Preprocessed | None = None
        self._image: object | None = None
        self._maps_key: Hashable = None
        self._clicks: list[frozenset[tuple[int, ...]]] = []
        self._maps: torch.Tensor | None = None
        self._crf: CRFNet | None = None
        self._image_of_crf: object | None = None
        self._crf_key: tuple[tuple[int, int], ...] | None = None
        self._crf_weights: list[torch.Tensor] | None = None

    @property
    def nbytes(self) -> int:
        """Bytes of the tensors made and kept here (the preprocessed crop, the maps and the CRF's pair weights; not
        the image itself)."""
        tensors = [
            t for t in (None if self._preprocessed is None else self._preprocessed[1], self._maps) if t is not None
        ]
        tensors += self._crf_weights or []
        return sum(t.element_size() * t.nelement() for t in tensors)

    def crf_weights(
        self, crf: CRFNet, image: object, box: Sequence[slice], features: torch.Tensor
    ) -> list[torch.Tensor]:
        """``crf.pair_weights(features)`` (:meth:`~common.networks.blocks.CRFNet.pair_weights`: they depend on the
        image and the CRF only, not on the clicks or the logits) for ``features`` ``(1, F, *B)``, the features of
        ``box`` of ``image``: kept for this ``crf`` object (its weights reloaded: another object), ``image`` object
        and box, and returned again while all three stay the same.

        When the box has grown around the kept one, only the shell that changed is computed: a voxel's weights
        depend on the features within the CRF's window of it and on which of those voxels lie in the box, so they
        are the kept ones wherever the window stays inside the old box or crosses a face the two boxes share; the
        rest is computed on slabs (each with the window's margin of context) and equals the whole box's weights
        there bit for bit (the Pairwise-Net gives a voxel the same weight whatever else it is given, without
        gradients)."""
        corners = tuple((s.start, s.stop) for s in box)
        same = self._crf_weights is not None and self._crf is crf and self._image_of_crf is image
        if same and self._crf_key == corners:
            return self._crf_weights  # type: ignore[return-value]
        inner = _inside(self._crf_key, corners) if same else None
        sizes = [e - s for s, e in corners]
        kept = None
        if inner is not None:  # the voxels whose window sees what it saw in the kept box
            kept = tuple(
                slice(k.start + (r if k.start > 0 else 0), k.stop - (r if k.stop < n else 0))
                for k, r, n in zip(inner, crf.radius, sizes)
            )
        if kept is None or any(k.start >= k.stop for k in kept) or torch.is_grad_enabled():
            weights = crf.pair_weights(features)
        else:
            old = self._crf_weights
            within = tuple(slice(k.start - i.start, k.stop - i.start) for k, i in zip(kept, inner))
            weights = [features.new_zeros((1, 1, *sizes)) for _ in old]  # type: ignore[union-attr]
            for w, o in zip(weights, old):  # type: ignore[arg-type]
                w[(..., *kept)] = o[(..., *within)]
            for slab in _shell(sizes, kept):
                context = tuple(
                    slice(max(s.start - r, 0), min(s.stop + r, n)) for s, r, n in zip(slab, crf.radius, sizes)
                )
                part = crf.pair_weights(features[(slice(None), slice(None), *context)])
                cut = tuple(slice(s.start - c.start, s.stop - c.start) for s, c in zip(slab, context))
                for w, p in zip(weights, part):
                    w[(..., *slab)] = p[(..., *cut)]
        self._crf_weights, self._crf, self._image_of_crf, self._crf_key = weights, crf, image, corners
        return weights

    def preprocessed(self, image: object, settings: Hashable, preprocess: Callable[[], Preprocessed]) -> Preprocessed:
        """``preprocess()`` (the preprocessing of ``image``: the brain crop's slices and the normalised crop),
        called once for this ``image`` object and ``settings`` (the preprocessing's parameters) and returned again
        while both stay the same; another image object or other settings replace it."""
        if self._preprocessed is None or self._source is not image or self._source_settings != settings:
            self._preprocessed = preprocess()
            self._source, self._source_settings = image, settings
        return self._preprocessed

    def geodesic_maps(
        self,
        image: torch.Tensor,
        seeds: torch.Tensor,
        box: Sequence[slice],
        spacing: Sequence[float] | None = None,
        lamb: float = 1.0,
        backend: str = "fastgeodis",
        scale: float | None = 1.0,
    ) -> torch.Tensor:
        """``geodesic_map(image[:, box], seeds[:, box], spacing, lamb, backend=backend, scale=scale)``, computed for
        the clicks not covered by the kept maps only.

        Args:
            image: ``(1, *S)`` image (recognised by identity: the same object on every step).
            seeds: ``(2, *S)`` seed maps, non-zero at the clicks (background, foreground), on ``image``'s device.
            box: one slice per spatial axis, the region the maps are computed in.
            spacing, lamb, backend, scale: as in :func:`common.transforms.geodesic_map`.

        Returns: ``(2, *R)`` float32 maps of the box ``R``, on the device of ``image``.
        """
        region = (slice(None), *box)
        key = (
            tuple((s.start, s.stop) for s in box),
            None if spacing is None else tuple(float(s) for s in spacing),
            float(lamb),
            backend,
            None if scale is None else float(scale),
        )
        if self._image is not image or self._maps_key != key:
            self._image, self._maps_key, self._clicks, self._maps = image, key, [], None
        sub = seeds[region] != 0
        clicks = [frozenset(map(tuple, channel.nonzero().tolist())) for channel in sub]
        if self._maps is None:
            kept = [False] * len(clicks)
        else:  # a channel's kept map serves while all its clicks are still sent
            kept = [old <= new for old, new in zip(self._clicks, clicks)]
        fresh = sub.clone()
        for c, reuse in enumerate(kept):
            for point in self._clicks[c] if reuse else ():
                fresh[(c, *point)] = False
        if all(kept) and not fresh.any():  # the same clicks again
            return self._maps  # type: ignore[return-value]
        img = convert_to_tensor(image, dtype=torch.float32, track_meta=False)[region]
        computed = geodesic_map(img, fresh, spacing=spacing, lamb=lamb, backend=backend, scale=scale)
        # a channel without fresh clicks comes back all at the map's maximum: the minimum keeps the kept map
        maps = torch.stack([torch.minimum(m, self._maps[c]) if kept[c] else m for c, m in enumerate(computed)])
        self._clicks, self._maps = clicks, maps
        return maps


def _shell(sizes: Sequence[int], inner: Sequence[slice]) -> list[tuple[slice, ...]]:
    """Boxes that tile ``[0, sizes)`` outside the box ``inner`` (axis by axis: below and above ``inner`` on an axis,
    within ``inner`` on the axes before it, whole on the axes after it); empty ones left out."""
    slabs = []
    for a, n in enumerate(sizes):
        for lo, hi in ((0, inner[a].start), (inner[a].stop, n)):
            if lo < hi:
                slabs.append((*inner[:a], slice(lo, hi), *(slice(0, m) for m in sizes[a + 1 :])))
    return slabs


def _inside(old: tuple[tuple[int, int], ...] | None, new: tuple[tuple[int, int], ...]) -> tuple[slice, ...] | None:
    """Where box ``old`` lies in box ``new`` (slices relative to ``new``), or None when it does not lie inside."""
    if old is None or any(o0 < n0 or o1 > n1 for (o0, o1), (n0, n1) in zip(old, new)):
        return None
    return tuple(slice(o0 - n0, o1 - n0) for (o0, o1), (n0, _) in zip(old, new))
