"""R-Net training samples, made as one refinement step is made at inference: the automatic segmentation of the
training image, simulated clicks on its errors, and the R-Net input on :func:`refine`'s box."""

from __future__ import annotations

import zlib
from collections.abc import Hashable, Mapping, Sequence

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.inferers import Inferer, SimpleInferer
from monai.transforms import MapTransform
from monai.utils.type_conversion import convert_to_dst_type, convert_to_tensor
from torch import nn

from common.apps.deepigeos.refinement import refinement_box
from common.transforms import clicks_to_seeds, geodesic_map, simulate_clicks

__all__ = ["case_seed", "image_spacing", "segment", "PredictLabeld", "RefinementSampled", "matched_euclidean_scale"]


def case_seed(seed: int, *parts: object) -> int:
    """A 32-bit seed from ``seed`` and identifiers (case id, round): equal arguments give equal seeds in every process
    (unlike Python's salted ``hash``)."""
    return zlib.crc32(":".join(str(p) for p in (seed, *parts)).encode())


def image_spacing(image: torch.Tensor, spacing: Sequence[float] | None = None) -> tuple[float, ...]:
    """``spacing`` if given, else the voxel size of a MetaTensor ``(C, *S)`` (its ``pixdim``), else 1 per axis."""
    dims = image.ndim - 1
    if spacing is not None:
        if len(spacing) != dims or min(spacing) <= 0:
            raise ValueError(f"spacing: expected {dims} positive voxel sizes, found {list(spacing)}")
        return tuple(float(s) for s in spacing)
    if isinstance(image, MetaTensor):
        return tuple(float(s) for s in image.pixdim[:dims])
    return (1.0,) * dims


def segment(
    network: nn.Module,
    image: torch.Tensor,
    inferer: Inferer | None = None,
    device: str | torch.device = "cpu",
    amp: bool = False,
) -> torch.Tensor:
    """The label ``(*S)`` int64 (CPU) that ``network`` (eval mode, no gradients) gives ``image`` ``(C, *S)``: the argmax
    of its logits (or log-probabilities) through ``inferer`` (default: the whole image at once); ``amp`` runs it
    under bfloat16 autocast on CUDA."""
    device = torch.device(device)
    x = convert_to_tensor(image, dtype=torch.float32, track_meta=False)[None].to(device)
    network.eval()
    with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp and device.type == "cuda"):
        out = (inferer or SimpleInferer())(x, network)
    return out.argmax(1)[0].cpu()


class PredictLabeld(MapTransform):
    """Segment an image with a frozen network (the automatic P-Net or P-Net + CRF-Net(f)) and store its label: the
    segmentation R-Net learns to refine.

    Args:
        keys: the image key (one).
        network: ``(1, C, *S) -> (1, K, *S)`` logits or log-probabilities; it is put in eval mode.
        output_key: where the label goes.
        inferer: how ``network`` sees the whole image (default: in one piece).
        device: where ``network`` runs (its parameters must be there); amp: bfloat16 autocast on CUDA.

    Shapes: ``d[key]`` ``(C, *S)`` -> ``d[output_key]`` ``(1, *S)`` uint8 class indices, the type (and MetaTensor
    meta data) of the image, on the CPU. Deterministic, so ``CacheDataset`` computes it once per case.
    """

    def __init__(
        self,
        keys: KeysCollection,
        network: nn.Module,
        output_key: str = "pred",
        inferer: Inferer | None = None,
        device: str | torch.device = "cpu",
        amp: bool = False,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        if len(self.keys) != 1:
            raise ValueError(f"keys: expected one image key, found {list(self.keys)}")
        self.network = network
        self.output_key = output_key
        self.inferer = inferer
        self.device = torch.device(device)
        self.amp = amp

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            label = segment(self.network, d[key], self.inferer, self.device, self.amp)
            d[self.output_key] = convert_to_dst_type(label[None], d[key], dtype=torch.uint8, device="cpu")[0]
        return d


class RefinementSampled(MapTransform):
    """One simulated refinement step as an R-Net training sample, built as :func:`refine` builds its input.

    A round of clicks (:func:`common.transforms.simulate_clicks`: the three slices with the most errors, the
    DeepIGeoS rule per error region, at most ``max_clicks``) is drawn on the errors of ``d[pred_key]`` against
    ``d[label_key]``, from a random state seeded by ``seed``, ``d[case_key]`` and, when the sample has one,
    ``d[variant_key]`` (the same clicks for a case and variant in every epoch and process, so ``CacheDataset`` caches
    the sample and validation is repeatable; several variants of a case give it several click draws). Then, on
    :func:`refinement_box` of the automatic label and the clicks (``margin`` voxels around them; the whole volume when
    both are empty), as :func:`refine` does: the geodesic maps of the background and foreground clicks
    (:func:`common.transforms.geodesic_map` with ``lamb``, ``spacing``, ``geodesic_backend`` and its defaults) and the
    R-Net input ``[image, automatic label, background map, foreground map]``, written to ``output_key``.

    Args:
        image_key, pred_key, label_key: the normalised image R-Net sees ``(1, *S)`` (the image the maps are computed
            on), the automatic label and the ground truth ``(1, *S)`` (0/1).
        output_key: where the ``(4, *R)`` R-Net input goes (default: ``image_key``).
        seeds_key: where the ``(2, *R)`` background / foreground click maps of the box go (for CRF-Net(fu)).
        clicks_key: where the number of clicks goes.
        case_key: the case id the clicks are seeded with.
        variant_key: an optional integer of the sample that is added to the seed (its click draw).
        margin: voxels around the label and the clicks, as in :func:`refine`.
        spacing: voxel size for the maps; ``None``: the image's ``pixdim`` (a MetaTensor), else 1.
        lamb: 1 geodesic maps (DeepIGeoS), 0 Euclidean (the ablation).
        scale: the maps' ``1 - exp(-d / scale)``, as in :func:`refine` (the Euclidean ablation's own value).
        geodesic_backend: as in :func:`refine`.
        min_size, voxels_per_click, max_clicks: the click rule and the round's budget.
        seed: base of the per-case seeds.

    Shapes: writes ``d[output_key]`` ``(4, *R)`` float32, ``d[label_key]`` and ``d[pred_key]`` ``(1, *R)`` float32,
    ``d[seeds_key]`` ``(2, *R)`` float32 (plain tensors), ``d[clicks_key]`` an ``int``; ``R`` is the box.
    """

    def __init__(
        self,
        image_key: str = "image",
        pred_key: str = "pred",
        label_key: str = "label",
        output_key: str | None = None,
        seeds_key: str = "seeds",
        clicks_key: str = "clicks",
        case_key: str = "case",
        variant_key: str = "variant",
        margin: int | Sequence[int] = 16,
        spacing: Sequence[float] | None = None,
        lamb: float = 1.0,
        scale: float = 1.0,
        geodesic_backend: str = "fastgeodis",
        min_size: int = 30,
        voxels_per_click: int = 100,
        max_clicks: int | None = 10,
        seed: int = 0,
    ) -> None:
        super().__init__([image_key, pred_key, label_key])
        if not 0.0 <= lamb <= 1.0:
            raise ValueError(f"lamb: expected a value in [0, 1] (1 geodesic, 0 Euclidean), found {lamb}")
        if min_size < 1 or voxels_per_click < 1 or (max_clicks is not None and max_clicks < 1):
            raise ValueError(
                f"min_size, voxels_per_click, max_clicks: expected positive counts (max_clicks may be None), found "
                f"{min_size}, {voxels_per_click}, {max_clicks}"
            )
        self.image_key, self.pred_key, self.label_key = image_key, pred_key, label_key
        self.output_key = image_key if output_key is None else output_key
        self.seeds_key, self.clicks_key, self.case_key, self.variant_key = seeds_key, clicks_key, case_key, variant_key
        self.margin = margin
        self.spacing = spacing
        self.lamb = float(lamb)
        if not scale > 0:
            raise ValueError(f"scale: expected a positive distance, found {scale}")
        self.scale = float(scale)
        self.geodesic_backend = geodesic_backend
        self.min_size, self.voxels_per_click, self.max_clicks = min_size, voxels_per_click, max_clicks
        self.seed = seed

    def __call__(self, data: Mapping[Hashable, object]) -> dict[Hashable, object]:
        d = dict(data)
        missing = [k for k in (self.image_key, self.pred_key, self.label_key, self.case_key) if k not in d]
        if missing:
            raise KeyError(
                f"RefinementSampled: expected keys {missing} in the sample, found only {sorted(map(str, d))}"
            )
        image = d[self.image_key]
        spacing = image_spacing(image, self.spacing)
        image = convert_to_tensor(image, dtype=torch.float32, track_meta=False)
        pred = convert_to_tensor(d[self.pred_key], track_meta=False)
        label = convert_to_tensor(d[self.label_key], track_meta=False)
        if image.shape[0] != 1 or pred.shape != label.shape or pred.shape[1:] != image.shape[1:] or pred.shape[0] != 1:
            raise ValueError(
                f"{self.image_key}, {self.pred_key}, {self.label_key}: expected (1, *S) each, found "
                f"{tuple(image.shape)}, {tuple(pred.shape)}, {tuple(label.shape)}"
            )
        ids = (d[self.case_key], int(d[self.variant_key])) if self.variant_key in d else (d[self.case_key],)
        rng = np.random.RandomState(case_seed(self.seed, *ids))
        fg, bg = simulate_clicks(
            pred[0].numpy() != 0,
            label[0].numpy() != 0,
            rng,
            self.min_size,
            self.voxels_per_click,
            max_clicks=self.max_clicks,
        )
        seeds = torch.from_numpy(clicks_to_seeds(fg, bg, tuple(image.shape[1:])))
        box = refinement_box(pred, seeds, self.margin)
        if any(s.stop <= s.start for s in box):  # no foreground and no click: the whole volume
            box = tuple(slice(0, n) for n in image.shape[1:])
        region = (slice(None), *box)
        img, sd = image[region], seeds[region]
        maps = geodesic_map(img, sd, spacing=spacing, lamb=self.lamb, backend=self.geodesic_backend, scale=self.scale)
        d[self.output_key] = torch.cat([img, (pred[region] != 0).float(), maps])
        d[self.pred_key] = (pred[region] != 0).float()
        d[self.label_key] = (label[region] != 0).float()
        d[self.seeds_key] = sd
        d[self.clicks_key] = len(fg) + len(bg)
        return d


def matched_euclidean_scale(
    data: Sequence[Mapping[Hashable, object]], fit_scale: float = 1000.0, **sampler: object
) -> dict[str, float]:
    """The ``scale`` of Euclidean maps (``lamb = 0``) that spreads them over the refinement box as geodesic maps
    (``lamb = 1``, ``scale = 1``) spread: the median of the Euclidean map over the boxes equals the geodesic map's.

    Each item is made into an R-Net sample twice by :class:`RefinementSampled` (``sampler``: its arguments, the
    bundle's; the same clicks and box both times), geodesic and Euclidean; the distances ``d`` of every voxel of every
    box, in each map whose channel has a click, are pooled. The map ``1 - exp(-d / s)`` is monotonic in ``d``, so its
    median is the map of the median distance, and the medians agree at ``s = median(d_euclidean) /
    median(d_geodesic)``. Distances are read back from maps of scale ``fit_scale`` (larger than the distances, so
    that float32 keeps them).

    Args:
        data: items as :class:`RefinementSampled` takes them, read twice (e.g. the training cases through the
            bundle's R-Net preprocessing and :class:`PredictLabeld`).
        fit_scale: the scale the distances are read back through.
        sampler: the arguments of :class:`RefinementSampled` other than ``lamb`` and ``scale``.

    Returns: ``{"scale": s, "median_geodesic": ..., "median_euclidean": ...}`` (the medians of the distances) and
    ``"geodesic_below_0.95"``, ``"euclidean_below_0.95"``, ``"matched_below_0.95"``: the fraction of the pooled voxels
    where the geodesic map, the Euclidean map of scale 1 and the Euclidean map of scale ``s`` are below 0.95.
    """
    distances: dict[float, list[np.ndarray]] = {1.0: [], 0.0: []}
    for lamb, pooled in distances.items():
        make = RefinementSampled(lamb=lamb, scale=fit_scale, **sampler)
        for item in data:
            d = make(item)
            maps, seeds = d[make.output_key][2:].numpy(), d[make.seeds_key].numpy()
            for c in range(2):
                if seeds[c].any():
                    pooled.append(-fit_scale * np.log1p(-maps[c].astype(np.float64)).ravel())
    if not distances[1.0]:
        raise ValueError("data: expected items with at least one simulated click, found none")
    geo, euc = (np.concatenate(distances[k]) for k in (1.0, 0.0))
    scale = float(np.median(euc) / np.median(geo))
    return {
        "scale": scale,
        "median_geodesic": float(np.median(geo)),
        "median_euclidean": float(np.median(euc)),
        "geodesic_below_0.95": float(np.mean(-np.expm1(-geo) < 0.95)),
        "euclidean_below_0.95": float(np.mean(-np.expm1(-euc) < 0.95)),
        "matched_below_0.95": float(np.mean(-np.expm1(-euc / scale) < 0.95)),
    }
