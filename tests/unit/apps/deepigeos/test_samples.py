"""R-Net training samples: the input is exactly what refine feeds R-Net for the same clicks (geodesic and Euclidean,
spacing from the image), the clicks are seeded per case, the box falls back to the volume, and bad samples fail
clearly; PredictLabeld stores the network's argmax."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from torch import nn

from common.apps.deepigeos import (
    PredictLabeld,
    RefinementSampled,
    case_seed,
    matched_euclidean_scale,
    refine,
    segment,
)
from common.transforms import clicks_to_seeds, simulate_clicks

RULE = {"min_size": 5, "voxels_per_click": 20, "max_clicks": 6}


class Recorder(nn.Module):
    """Stands in for R-Net: keeps what it is given, answers background logits."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(x.clone())
        return torch.zeros(x.shape[0], 2, *x.shape[2:])


def case() -> dict:
    """A bright block, a label that misses one end of it and adds a blob beside it, on a (1.5, 1, 2) mm grid."""
    rng = np.random.default_rng(0)
    truth = np.zeros((24, 26, 20), np.float32)
    truth[6:16, 8:18, 5:14] = 1
    image = (truth * 2 + rng.normal(0, 0.3, truth.shape)).astype(np.float32)
    pred = truth.copy()
    pred[6:10] = 0
    pred[17:21, 8:12, 5:9] = 1
    affine = np.diag([1.5, 1.0, 2.0, 1.0])
    return {
        "image": MetaTensor(torch.from_numpy(image)[None], affine=torch.from_numpy(affine)),
        "pred": torch.from_numpy(pred)[None].to(torch.uint8),
        "label": torch.from_numpy(truth)[None],
        "case": "BraTS20_Training_007",
    }


@pytest.mark.parametrize("lamb, scale", [(1.0, 1.0), (0.0, 1.0), (0.0, 7.0)])
def test_sample_is_what_refine_gives_r_net_for_the_same_clicks(lamb: float, scale: float) -> None:
    d = case()
    out = RefinementSampled(margin=3, lamb=lamb, scale=scale, seed=4, **RULE)(d)
    rng = np.random.RandomState(case_seed(4, d["case"]))
    fg, bg = simulate_clicks(d["pred"][0].numpy() != 0, d["label"][0].numpy() != 0, rng, 5, 20, max_clicks=6)
    assert out["clicks"] == len(fg) + len(bg) > 0
    seeds = torch.from_numpy(clicks_to_seeds(fg, bg, (24, 26, 20)))
    recorder = Recorder()
    step = refine(
        d["image"], d["pred"].long(), seeds, recorder, 2, margin=3, spacing=(1.5, 1.0, 2.0), lamb=lamb, scale=scale
    )
    torch.testing.assert_close(out["image"][None], recorder.seen[0])  # image, label, background and foreground maps
    region = (slice(None), *step.box)
    torch.testing.assert_close(out["seeds"], seeds[region])
    torch.testing.assert_close(out["label"], d["label"][region])
    assert out["image"].shape[0] == 4 and out["pred"].shape == out["label"].shape == (1, *out["image"].shape[1:])


def test_clicks_depend_on_the_case_variant_and_seed_only() -> None:
    make = RefinementSampled(margin=3, seed=4, **RULE)
    a, b = make(case()), make(case())
    torch.testing.assert_close(a["seeds"], b["seeds"])  # every epoch and process: the same sample
    other = make({**case(), "case": "BraTS20_Training_008"})
    reseeded = RefinementSampled(margin=3, seed=5, **RULE)(case())
    assert not torch.equal(other["seeds"], a["seeds"]) and not torch.equal(reseeded["seeds"], a["seeds"])
    variant = make({**case(), "variant": 2})  # another click draw of the same case: seeded by (seed, case, variant)
    rng = np.random.RandomState(case_seed(4, "BraTS20_Training_007", 2))
    d = case()
    fg, bg = simulate_clicks(d["pred"][0].numpy() != 0, d["label"][0].numpy() != 0, rng, 5, 20, max_clicks=6)
    assert variant["clicks"] == len(fg) + len(bg) and not torch.equal(variant["seeds"], a["seeds"])


def test_without_label_or_clicks_the_sample_is_the_whole_volume() -> None:
    d = case()
    d["pred"] = torch.zeros_like(d["pred"])
    d["label"] = torch.zeros_like(d["label"])
    out = RefinementSampled(margin=3, **RULE)(d)
    assert out["clicks"] == 0 and out["image"].shape == (4, 24, 26, 20)
    assert torch.all(out["image"][2:] == 1)  # no click: both maps infinitely far


def test_bad_samples_and_arguments() -> None:
    d = case()
    del d["case"]
    with pytest.raises(KeyError, match=r"expected keys \['case'\] in the sample"):
        RefinementSampled(**RULE)(d)
    d = case()
    d["label"] = d["label"][:, :-1]
    with pytest.raises(ValueError, match=r"image, pred, label: expected \(1, \*S\) each"):
        RefinementSampled(**RULE)(d)
    with pytest.raises(ValueError, match=r"lamb: expected a value in \[0, 1\]"):
        RefinementSampled(lamb=2.0)
    with pytest.raises(ValueError, match="min_size, voxels_per_click, max_clicks: expected positive counts"):
        RefinementSampled(max_clicks=0)


class Threshold(nn.Module):
    """Logits (0, x): the argmax is x > 0."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([torch.zeros_like(x), x], 1)


def test_predict_labeld_stores_the_argmax_with_the_image_meta_data() -> None:
    d = case()
    out = PredictLabeld("image", Threshold(), output_key="auto")(d)
    assert out["auto"].dtype == torch.uint8 and out["auto"].shape == (1, 24, 26, 20)
    torch.testing.assert_close(out["auto"].as_tensor(), (d["image"].as_tensor() > 0).to(torch.uint8))
    assert torch.equal(out["auto"].affine, d["image"].affine)
    assert torch.equal(segment(Threshold(), d["image"]), (d["image"][0].as_tensor() > 0).long())
    with pytest.raises(ValueError, match="keys: expected one image key"):
        PredictLabeld(["image", "label"], Threshold())


def test_case_seed_is_stable() -> None:
    assert case_seed(0, "BraTS20_Training_001") == case_seed(0, "BraTS20_Training_001")
    assert case_seed(0, "BraTS20_Training_001") != case_seed(1, "BraTS20_Training_001")
    assert case_seed(0, "a", 1) != case_seed(0, "a", 2)
    assert case_seed(0, "x") == 2690456565  # the same in every process and Python version (CRC-32)


def test_r_net_input_from_its_own_image_into_the_output_key() -> None:
    d = case()
    d["rnet_image"] = MetaTensor(torch.where(d["label"] > 0, d["image"].as_tensor(), -5.0), affine=d["image"].affine)
    out = RefinementSampled(image_key="rnet_image", output_key="image", margin=3, **RULE)(d)
    same = RefinementSampled(margin=3, **RULE)({**d, "image": d["rnet_image"]})
    torch.testing.assert_close(out["image"], same["image"])  # built from rnet_image, written where training reads it
    assert out["image"].shape[0] == 4 and torch.equal(out["rnet_image"], d["rnet_image"])


def _below(sample: dict, level: float = 0.95) -> float:
    """The fraction of the box's voxels where a clicked channel's map is below ``level``."""
    maps, seeds = sample["image"][2:], sample["seeds"]
    return float(torch.cat([maps[c].ravel() for c in range(2) if seeds[c].any()]).lt(level).float().mean())


def test_matched_euclidean_scale_spreads_the_map_as_the_geodesic_one() -> None:
    """At scale 1 the Euclidean map (mm) is near 1 on almost the whole box; at the matched scale its median is the
    geodesic map's and it is below 0.95 on a comparable part of the box."""
    items = [case(), {**case(), "case": "BraTS20_Training_008"}]
    fit = matched_euclidean_scale(items, margin=3, seed=4, **RULE)
    assert fit["scale"] > 1.5 and fit["median_euclidean"] / fit["scale"] == pytest.approx(fit["median_geodesic"])
    geodesic = [_below(RefinementSampled(margin=3, seed=4, **RULE)(d)) for d in items]
    euclidean = [_below(RefinementSampled(margin=3, lamb=0.0, seed=4, **RULE)(d)) for d in items]
    matched = [_below(RefinementSampled(margin=3, lamb=0.0, scale=fit["scale"], seed=4, **RULE)(d)) for d in items]
    assert np.mean(geodesic) == pytest.approx(fit["geodesic_below_0.95"], abs=1e-6)
    assert np.mean(matched) == pytest.approx(fit["matched_below_0.95"], abs=1e-6)
    assert np.mean(euclidean) < np.mean(geodesic) / 2  # the near-binary click mask the reviewer found
    assert abs(np.mean(matched) - np.mean(geodesic)) < 0.15, (euclidean, geodesic, matched, fit)
