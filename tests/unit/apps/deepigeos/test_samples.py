"""R-Net training samples: the input is exactly what refine feeds R-Net for the same clicks (geodesic and Euclidean,
spacing from the image), the clicks are seeded per case, the box falls back to the volume, and bad samples fail
clearly; several rounds accumulate clicks on a label refined between them, as the evaluation's rounds do; the training
transform draws a fresh sample every epoch (repeatably, also in DataLoader workers) after the cached automatic label;
PredictLabeld stores the network's argmax."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from torch import nn

from common.apps.deepigeos import (
    PredictLabeld,
    RandRefinementSampled,
    RefinementSampled,
    case_seed,
    matched_euclidean_scale,
    refine,
    refinement_box,
    segment,
)
from common.transforms import clicks_to_seeds, paint_balls, simulate_clicks

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
    rng = np.random.RandomState(case_seed(4, d["case"], 1))  # round 1
    fg, bg = simulate_clicks(d["pred"][0].numpy() != 0, d["label"][0].numpy() != 0, rng, 5, 20, max_clicks=6)
    assert out["clicks"] == len(fg) + len(bg) > 0 and out["rounds"] == 1
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
    variant = make({**case(), "variant": 2})  # another draw of the same case: seeded by (seed, case, variant, round)
    rng = np.random.RandomState(case_seed(4, "BraTS20_Training_007", 2, 1))
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


def test_rounds_accumulate_clicks_on_the_label_refined_between_rounds() -> None:
    """Three rounds: round r's clicks on the errors of the initial label with balls painted at the clicks so far, all
    clicks in the sample, R-Net's input what refine gives it for the initial label and every click."""
    d = case()
    out = RefinementSampled(margin=3, rounds=3, ball_radius=2, seed=4, **RULE)(d)
    truth, initial = d["label"][0].numpy() != 0, d["pred"][0].numpy() != 0
    current, seeds, total = initial, np.zeros((2, 24, 26, 20), np.float32), 0
    for r in (1, 2, 3):
        rng = np.random.RandomState(case_seed(4, d["case"], r))
        fg, bg = simulate_clicks(current, truth, rng, 5, 20, max_clicks=6)
        if r == 2:  # drawn on the refined label, not on the initial one
            again = simulate_clicks(initial, truth, np.random.RandomState(case_seed(4, d["case"], r)), 5, 20, 6)
            assert not np.array_equal(np.concatenate([fg, bg]), np.concatenate(again))
        total += len(fg) + len(bg)
        seeds = np.maximum(seeds, clicks_to_seeds(fg, bg, truth.shape))
        current = paint_balls(initial, seeds, 2) != 0
    assert out["rounds"] == 3 and out["clicks"] == total > RULE["max_clicks"]  # beyond one round's budget
    recorder = Recorder()
    step = refine(d["image"], d["pred"].long(), torch.from_numpy(seeds), recorder, 2, margin=3, spacing=(1.5, 1, 2))
    torch.testing.assert_close(out["image"][None], recorder.seen[0])
    torch.testing.assert_close(out["seeds"], torch.from_numpy(seeds)[(slice(None), *step.box)])


def test_training_samples_are_fresh_every_epoch_and_repeatable() -> None:
    make = RandRefinementSampled(margin=3, rounds=4, seed=4, **RULE)
    with pytest.raises(RuntimeError, match=r"expected set_epoch\(epoch\) before the first sample"):
        make(case())
    draws = {e: make.set_epoch(e)(case()) for e in range(1, 9)}
    for e, out in draws.items():
        k = 1 + np.random.RandomState(case_seed(4, "BraTS20_Training_007", e)).randint(4)  # rounds: 1..4
        assert out["rounds"] == k
        d = case()
        rng = np.random.RandomState(case_seed(4, "BraTS20_Training_007", e, 1))  # round 1, seeded by the epoch
        fg, bg = simulate_clicks(d["pred"][0].numpy() != 0, d["label"][0].numpy() != 0, rng, 5, 20, max_clicks=6)
        first = torch.from_numpy(clicks_to_seeds(fg, bg, (24, 26, 20)))
        box = refinement_box(d["pred"], first, 3)
        if k == 1:
            torch.testing.assert_close(out["seeds"], first[(slice(None), *box)])
        else:
            assert out["clicks"] > len(fg) + len(bg)
    assert len({out["rounds"] for out in draws.values()}) > 1 and max(out["clicks"] for out in draws.values()) > 6
    assert len({out["seeds"].numpy().tobytes() for out in draws.values()}) == len(draws)  # new clicks every epoch
    again = make.set_epoch(3)(case())  # a rerun or a resumed run: the same sample
    torch.testing.assert_close(again["image"], draws[3]["image"])
    with_variant = make.set_epoch(3)({**case(), "variant": 1})
    assert not torch.equal(with_variant["seeds"], draws[3]["seeds"]) or with_variant["rounds"] != draws[3]["rounds"]


class Fixed(nn.Module):
    """Stands in for the automatic network: the logits of a fixed label, whatever the image; counts its calls."""

    def __init__(self, label: torch.Tensor) -> None:
        super().__init__()
        self.label, self.calls = label, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return torch.cat([torch.zeros_like(self.label), 2 * self.label - 1])[None]


def test_cached_automatic_label_and_per_epoch_clicks_through_dataloader_workers() -> None:
    """As train_rnet.json runs it: CacheDataset keeps PredictLabeld's label and stops before the random sampler; the
    trainer's EPOCH_STARTED handler sets the epoch, and the DataLoader's worker processes (made for each epoch) draw
    that epoch's clicks."""
    from ignite.engine import Engine, Events
    from monai.data import CacheDataset, DataLoader
    from monai.transforms import Compose

    items = [{k: v for k, v in case().items() if k != "pred"} | {"case": c} for c in ("a", "b")]
    network = Fixed(case()["pred"].float())
    predict = PredictLabeld("image", network, output_key="pred")
    sampler = RandRefinementSampled(margin=3, rounds=3, seed=4, **RULE)
    dataset = CacheDataset(items, Compose([predict, sampler]), cache_rate=1.0, progress=False)
    assert network.calls == 2  # the automatic label, once per case
    seen: dict[tuple[int, str], tuple[int, int, torch.Tensor]] = {}
    engine = Engine(
        lambda e, b: seen.update({(e.state.epoch, b["case"][0]): (int(b["rounds"]), int(b["clicks"]), b["seeds"][0])})
    )
    engine.add_event_handler(Events.EPOCH_STARTED, lambda e: sampler.set_epoch(e.state.epoch))
    engine.run(DataLoader(dataset, batch_size=1, num_workers=2), max_epochs=3)
    assert network.calls == 2 and len(seen) == 6
    for (epoch, c), (rounds, clicks, seeds) in seen.items():
        expected = sampler.set_epoch(epoch)(predict(items["ab".index(c)]))
        assert (rounds, clicks) == (expected["rounds"], expected["clicks"])
        torch.testing.assert_close(seeds, expected["seeds"])
    assert len({seen[(e, "a")][2].numpy().tobytes() for e in (1, 2, 3)}) == 3


def test_bad_round_arguments() -> None:
    with pytest.raises(ValueError, match="rounds: expected at least 1 round"):
        RandRefinementSampled(rounds=0)
    with pytest.raises(ValueError, match="ball_radius: expected a radius in voxels >= 0"):
        RefinementSampled(ball_radius=-1)
    with pytest.raises(ValueError, match="slice_choice: expected one of"):
        RefinementSampled(slice_choice="per_kind")
