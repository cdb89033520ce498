"""R-Net training samples, made as one refinement step is made at inference: the automatic segmentation of the
training image, rounds of simulated clicks on its errors as the evaluation draws them, and the R-Net input on
:func:`refine`'s box."""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.inferers import Inferer, SimpleInferer
from monai.transforms import MapTransform, RandomizableTrait
from monai.utils.type_conversion import convert_to_dst_type, convert_to_tensor
from torch import nn

from common.apps.deepigeos.refinement import refinement_box
from common.apps.deepigeos.rounds import ball_step, case_seed, simulate_rounds
from common.transforms import geodesic_map
from common.transforms.clicks import SLICE_CHOICES

__all__ = [
    "image_spacing",
    "segment",
    "PredictLabeld",
    "RefinementSampled",
    "RandRefinementSampled",
    "matched_euclidean_scale",
]


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
    """A simulated refinement step as an R-Net training sample, built as :func:`refine` builds its input, with the
    clicks of the interactive evaluation.

    ``rounds`` rounds of clicks (:func:`~common.apps.deepigeos.simulate_rounds`, as the evaluation draws them: each
    round on the errors of the label after the round before, the DeepIGeoS rule on the slices with the most errors,
    at most ``max_clicks`` a round, the clicks accumulated) start from ``d[pred_key]`` against ``d[label_key]``, the
    clicks of round ``r`` seeded by ``seed``, ``d[case_key]``, ``d[variant_key]`` when the sample has one, and ``r``.
    Between rounds the label is refined by balls of ``ball_radius`` voxels painted at the clicks so far on the
    automatic label (:func:`~common.apps.deepigeos.ball_step`, the evaluation's no-network baseline): a stand-in for
    the R-Net being trained, which the evaluation runs there (R-Net itself would need the network in the data
    pipeline). The sample is the last round's: on :func:`refinement_box` of the automatic label and all clicks
    (``margin`` voxels around them; the whole volume when both are empty), as :func:`refine` does with
    ``refine_from="initial"``, the geodesic maps of the background and foreground clicks
    (:func:`common.transforms.geodesic_map` with ``lamb``, ``spacing``, ``geodesic_backend`` and its defaults) and the
    R-Net input ``[image, automatic label, background map, foreground map]``, written to ``output_key``.

    Deterministic: the same sample for a case and variant in every epoch and process, so ``CacheDataset`` caches it
    and validation is repeatable. :class:`RandRefinementSampled` draws a fresh one every epoch (training).

    Args:
        image_key, pred_key, label_key: the normalised image R-Net sees ``(1, *S)`` (the image the maps are computed
            on), the automatic label and the ground truth ``(1, *S)`` (0/1).
        output_key: where the ``(4, *R)`` R-Net input goes (default: ``image_key``).
        seeds_key: where the ``(2, *R)`` background / foreground click maps of the box go (for CRF-Net(fu)).
        clicks_key: where the number of clicks goes (all rounds).
        rounds_key: where the number of rounds goes.
        case_key: the case id the clicks are seeded with.
        variant_key: an optional integer of the sample that is added to the seed (its click draw).
        margin: voxels around the label and the clicks, as in :func:`refine`.
        spacing: voxel size for the maps; ``None``: the image's ``pixdim`` (a MetaTensor), else 1.
        lamb: 1 geodesic maps (DeepIGeoS), 0 Euclidean (the ablation).
        scale: the maps' ``1 - exp(-d / scale)``, as in :func:`refine` (the Euclidean ablation's own value).
        geodesic_backend: as in :func:`refine`.
        min_size, voxels_per_click, max_clicks, slice_choice: the click rule and the round's budget
            (:func:`common.transforms.simulate_clicks`).
        rounds: rounds of clicks in the sample (:class:`RandRefinementSampled`: the most).
        ball_radius: radius (voxels) of the balls that refine the label between rounds.
        seed: base of the per-case seeds.

    Shapes: writes ``d[output_key]`` ``(4, *R)`` float32, ``d[label_key]`` and ``d[pred_key]`` ``(1, *R)`` float32,
    ``d[seeds_key]`` ``(2, *R)`` float32 (plain tensors), ``d[clicks_key]`` and ``d[rounds_key]`` ``int``; ``R`` is
    the box.
    """

    def __init__(
        self,
        image_key: str = "image",
        pred_key: str = "pred",
        label_key: str = "label",
        output_key: str | None = None,
        seeds_key: str = "seeds",
        clicks_key: str = "clicks",
        rounds_key: str = "rounds",
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
        slice_choice: str = "all_errors",
        rounds: int = 1,
        ball_radius: float = 3.0,
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
        if slice_choice not in SLICE_CHOICES:
            raise ValueError(f"slice_choice: expected one of {list(SLICE_CHOICES)}, found {slice_choice!r}")
        if rounds < 1:
            raise ValueError(f"rounds: expected at least 1 round of clicks, found {rounds}")
        if not ball_radius >= 0:
            raise ValueError(f"ball_radius: expected a radius in voxels >= 0, found {ball_radius}")
        if not scale > 0:
            raise ValueError(f"scale: expected a positive distance, found {scale}")
        self.image_key, self.pred_key, self.label_key = image_key, pred_key, label_key
        self.output_key = image_key if output_key is None else output_key
        self.seeds_key, self.clicks_key, self.rounds_key = seeds_key, clicks_key, rounds_key
        self.case_key, self.variant_key = case_key, variant_key
        self.margin = margin
        self.spacing = spacing
        self.lamb = float(lamb)
        self.scale = float(scale)
        self.geodesic_backend = geodesic_backend
        self.min_size, self.voxels_per_click, self.max_clicks = min_size, voxels_per_click, max_clicks
        self.slice_choice = slice_choice
        self.rounds = int(rounds)
        self.ball_radius = float(ball_radius)
        self.seed = seed

    def ids(self, d: Mapping[Hashable, object]) -> tuple[object, ...]:
        """What the sample's clicks are seeded with besides :attr:`seed`: the case id, and the variant if any."""
        if self.case_key not in d:
            raise KeyError(
                f"{type(self).__name__}: expected keys ['{self.case_key}'] in the sample, found only "
                f"{sorted(map(str, d))}"
            )
        return (d[self.case_key], int(d[self.variant_key])) if self.variant_key in d else (d[self.case_key],)

    def __call__(self, data: Mapping[Hashable, object]) -> dict[Hashable, object]:
        return self.sample(data, self.rounds, self.ids(data))

    def sample(self, data: Mapping[Hashable, object], rounds: int, ids: Sequence[object]) -> dict[Hashable, object]:
        """The sample of ``data`` after ``rounds`` rounds whose clicks are seeded with :attr:`seed`, ``ids`` and the
        round."""
        d = dict(data)
        missing = [k for k in (self.image_key, self.pred_key, self.label_key) if k not in d]
        if missing:
            raise KeyError(
                f"{type(self).__name__}: expected keys {missing} in the sample, found only {sorted(map(str, d))}"
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
        last = simulate_rounds(
            label[0],
            pred[0] != 0,
            ball_step(self.ball_radius),
            rounds,
            self.seed,
            ids,
            refine_last=False,
            min_size=self.min_size,
            voxels_per_click=self.voxels_per_click,
            max_clicks=self.max_clicks,
            slice_choice=self.slice_choice,
        )[-1]
        box = refinement_box(pred, last.seeds, self.margin)
        if any(s.stop <= s.start for s in box):  # no foreground and no click: the whole volume
            box = tuple(slice(0, n) for n in image.shape[1:])
        region = (slice(None), *box)
        img, sd = image[region], last.seeds[region]
        maps = geodesic_map(img, sd, spacing=spacing, lamb=self.lamb, backend=self.geodesic_backend, scale=self.scale)
        d[self.output_key] = torch.cat([img, (pred[region] != 0).float(), maps])
        d[self.pred_key] = (pred[region] != 0).float()
        d[self.label_key] = (label[region] != 0).float()
        d[self.seeds_key] = sd
        d[self.clicks_key] = last.clicks_total
        d[self.rounds_key] = rounds
        return d


class RandRefinementSampled(RandomizableTrait, RefinementSampled):
    """:class:`RefinementSampled` drawn afresh every epoch: R-Net's training samples.

    In epoch ``e`` (:meth:`set_epoch`) the sample of a case (and variant) has ``k`` rounds of clicks, ``k`` uniform in
    ``1..rounds`` (the evaluation's rounds), drawn from ``case_seed(seed, case[, variant], e)``, and round ``r``'s
    clicks are seeded by ``(seed, case[, variant], e, r)``: fresh clicks every epoch, the same in every process and
    in a resumed run. ``CacheDataset`` stops caching before this transform (a random one), so the automatic label
    before it is computed once and the clicks and maps every epoch.

    The epoch must be set in the process that makes the samples before the epoch's first one: the bundle's
    ``train_rnet.json`` calls :meth:`set_epoch` on the trainer's ``EPOCH_STARTED``; ignite creates the epoch's
    ``DataLoader`` iterator after that event, so worker processes (``persistent_workers=False``, the default) start
    with the epoch set.

    Args:
        kwargs: as :class:`RefinementSampled` (``rounds``: the most rounds a sample has).

    Shapes: as :class:`RefinementSampled` (``d[rounds_key]``: the ``k`` drawn).
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.epoch: int | None = None

    def set_epoch(self, epoch: int) -> RandRefinementSampled:
        """The epoch the next samples are drawn for."""
        self.epoch = int(epoch)
        return self

    def __call__(self, data: Mapping[Hashable, object]) -> dict[Hashable, object]:
        if self.epoch is None:
            raise RuntimeError(
                "RandRefinementSampled: expected set_epoch(epoch) before the first sample (the trainer's "
                "EPOCH_STARTED handler in train_rnet.json), found no epoch"
            )
        ids = (*self.ids(data), self.epoch)
        rounds = 1 + int(np.random.RandomState(case_seed(self.seed, *ids)).randint(self.rounds))
        return self.sample(data, rounds, ids)


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
