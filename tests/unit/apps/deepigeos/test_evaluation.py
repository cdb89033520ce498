"""InteractiveEvaluation: rounds of simulated clicks per method (the same first-round clicks for every method,
clicks accumulating, CRF-Net(fu) keeping every clicked voxel), scores against an independent Dice, the reports it
writes (with the paired comparisons asked for), the R-Net training samples drawing the clicks of its rounds, the
slice choice, and errors."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from common.apps.deepigeos import InteractiveEvaluation, RefinementSampled, case_seed, refinement_box, segment
from common.apps.deepigeos.evaluation import _dice
from common.networks.blocks import CRFNet
from common.networks.nets import CRFSegmenter, PNet, rnet
from common.transforms import clicks_to_seeds, paint_balls, simulate_clicks

SMALL = {"features": (4, 4, 4, 4, 4), "compress": 2, "head_channels": 4}
RULE = {"min_size": 4, "voxels_per_click": 20, "max_clicks": 5}


def networks() -> dict:
    torch.manual_seed(0)
    return {
        "pnet": PNet(3, **SMALL),
        "pnet_crf": CRFSegmenter(PNet(3, **SMALL), CRFNet(3, 2, 1, window=3, iterations=2)),
        "rnet": rnet(3, **SMALL),
        "rnet_crf": CRFSegmenter(rnet(3, **SMALL), CRFNet(3, 2, 1, window=3, iterations=2)),
        "rnet_euclidean": rnet(3, **SMALL),
    }


def cases() -> list[dict]:
    out = []
    for k in range(2):
        rng = np.random.default_rng(k)
        truth = np.zeros((20, 22, 16), np.float32)
        truth[5 + k : 13, 6:15, 4:12] = 1
        image = (truth * 2 + rng.normal(0, 0.3, truth.shape)).astype(np.float32)
        out.append(
            {
                "image": MetaTensor(
                    torch.from_numpy(image)[None], affine=torch.diag(torch.tensor([1.0, 1.0, 2.0, 1.0]))
                ),
                "label": torch.from_numpy(truth)[None],
                "case": f"case{k}",
            }
        )
    return out


def evaluation(tmp_path, **kwargs) -> InteractiveEvaluation:
    return InteractiveEvaluation(
        cases(), output_dir=tmp_path, **{"rounds": 3, "margin": 3, **RULE, **networks(), **kwargs}
    )


def test_rounds_share_first_clicks_accumulate_and_crf_keeps_every_click(tmp_path) -> None:
    ev = evaluation(tmp_path)
    item = cases()[0]
    image, label = item["image"], item["label"][0]
    start = segment(ev.automatic["pnet_crf"], image)
    runs = {m: ev.simulate(m, image, label, start, "case0") for m in ("rnet", "rnet_crf", "rnet_euclidean")}
    first = [(r[0].foreground.tolist(), r[0].background.tolist()) for r in runs.values()]
    assert first[0] == first[1] == first[2] and runs["rnet"][0].clicks > 0  # same start, same seed: same clicks
    for steps in runs.values():
        assert [s.clicks_total for s in steps] == list(np.cumsum([s.clicks for s in steps]))
        assert all(s.clicks <= RULE["max_clicks"] for s in steps)
    clicked_fg, clicked_bg = [], []
    for step in runs["rnet_crf"]:  # CRF-Net(fu) clamps every click of this and the earlier rounds
        clicked_fg += step.foreground.tolist()
        clicked_bg += step.background.tolist()
        assert all(step.label[tuple(p)] == 1 for p in clicked_fg) and all(step.label[tuple(p)] == 0 for p in clicked_bg)
    assert all(label[tuple(p)] == 1 for p in clicked_fg) and all(label[tuple(p)] == 0 for p in clicked_bg)


def test_reports_hold_every_method_and_round_with_independent_dice(tmp_path) -> None:
    ev = evaluation(tmp_path)
    summary = ev.run()
    names = ["P-Net", "P-Net + CRF-Net(f)", "R-Net", "R-Net + CRF-Net(fu)", "R-Net, Euclidean maps"]
    assert [(r["method"], r["round"]) for r in summary] == [(n, 0) for n in names[:2]] + [
        (n, r) for n in names[2:] for r in (1, 2, 3)
    ]
    rows = list(csv.DictReader(open(tmp_path / "interactive_evaluation_cases.csv")))
    assert len(rows) == 2 * (2 + 3 * 3)
    item = cases()[1]
    start = segment(ev.automatic["pnet_crf"], item["image"])
    steps = ev.simulate("rnet", item["image"], item["label"][0], start, "case1")
    for r, step in enumerate(steps, 1):
        row = next(x for x in rows if x["case"] == "case1" and x["method"] == "R-Net" and x["round"] == str(r))
        pred, truth = step.label.numpy() != 0, item["label"][0].numpy() != 0  # brute force: 2|P & G| / (|P| + |G|)
        expected = 2.0 * np.logical_and(pred, truth).sum() / (pred.sum() + truth.sum())
        assert float(row["dice"]) == pytest.approx(float(expected), abs=1e-6)
        assert int(row["clicks"]) == step.clicks and int(row["clicks_total"]) == step.clicks_total
    for key in ("dice_mean", "clicks_mean", "clicks_total_mean"):
        mean = np.mean([float(x[key[: -len("_mean")]]) for x in rows if x["method"] == "R-Net" and x["round"] == "2"])
        assert float(next(s for s in summary if s["method"] == "R-Net" and s["round"] == 2)[key]) == pytest.approx(mean)
    md = (tmp_path / "interactive_evaluation.md").read_text()
    assert "| R-Net + CRF-Net(fu) | 3 |" in md and "## Paired differences (per test case)" in md
    assert "max_clicks 5" in md and "slice_choice all_errors" in md
    assert (tmp_path / "dice_vs_clicks.png").stat().st_size > 1000
    differences = list(csv.DictReader(open(tmp_path / "interactive_evaluation_differences.csv")))
    pairs = {(d["a"], d["round_a"], d["b"], d["round_b"]) for d in differences}
    start = ("P-Net + CRF-Net(f)", "0")  # no ball baseline: CRF-Net(f), geodesic vs Euclidean, each round vs start
    expected = {("P-Net + CRF-Net(f)", "0", "P-Net", "0")}
    expected |= {("R-Net", str(r), "R-Net, Euclidean maps", str(r)) for r in (1, 2, 3)}
    expected |= {(m, str(r), *start) for m in names[2:] for r in (1, 2, 3)}
    assert pairs == expected and len(differences) == 2 * len(expected)  # Dice and ASSD each
    assert {d["lower_is_better"] for d in differences if d["metric"] == "assd_mm"} == {"True"}
    r = next(d for d in differences if (d["a"], d["round_a"], d["b"], d["metric"]) == ("R-Net", "2", start[0], "dice"))
    by_case = sorted(rows, key=lambda x: x["case"])
    a = [float(x["dice"]) for x in by_case if x["method"] == "R-Net" and x["round"] == "2"]
    b = [float(x["dice"]) for x in by_case if x["method"] == start[0]]
    assert float(r["difference"]) == pytest.approx(np.mean(np.subtract(a, b)))  # paired by case


def test_without_euclidean_r_net_there_are_no_ablation_rows(tmp_path) -> None:
    nets = networks()
    del nets["rnet_euclidean"]
    ev = InteractiveEvaluation(cases()[:1], output_dir=tmp_path, rounds=1, margin=3, start="pnet", **RULE, **nets)
    methods = {r["method"] for r in ev.run()}
    assert "R-Net, Euclidean maps" not in methods and "R-Net" in methods


def test_errors(tmp_path) -> None:
    with pytest.raises(ValueError, match="rounds: expected at least 1"):
        evaluation(tmp_path, rounds=0)
    with pytest.raises(ValueError, match=r"start: expected one of \['pnet', 'pnet_crf'\]"):
        evaluation(tmp_path, start="rnet")
    nets = networks()
    nets["rnet_crf"] = rnet(3, **SMALL)
    with pytest.raises(ValueError, match="rnet_crf: expected R-Net \\+ CRF-Net\\(fu\\) as one module"):
        InteractiveEvaluation(cases(), output_dir=tmp_path, **nets)
    ev = evaluation(tmp_path)
    with pytest.raises(ValueError, match="method: expected one of"):
        ev.simulate("pnet", cases()[0]["image"], cases()[0]["label"][0], cases()[0]["label"][0], "case0")
    ev.data = [{"image": cases()[0]["image"], "label": cases()[0]["label"]}]
    with pytest.raises(
        KeyError, match=r"data: expected items with the keys \['image', 'label', 'case'\], found \['image', 'label'\]"
    ):
        ev.run()


class Recorder(torch.nn.Module):
    """Stands in for R-Net: keeps its inputs, answers 'tumour' everywhere in the box."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(x.clone())
        return torch.cat([torch.zeros_like(x[:, :1]), torch.ones_like(x[:, :1])], 1)


@pytest.mark.parametrize("refine_from", ["initial", "previous"])
def test_r_net_refines_the_initial_label_or_the_previous_one(tmp_path, refine_from) -> None:
    nets = networks()
    nets["rnet"] = Recorder()
    ev = InteractiveEvaluation(
        cases(), output_dir=tmp_path, rounds=3, margin=3, refine_from=refine_from, **RULE, **nets
    )
    item = cases()[0]
    start = torch.zeros(20, 22, 16, dtype=torch.long)
    start[6:10, 8:12, 5:9] = 1  # misses most of the tumour: clicks in every round
    steps = ev.simulate("rnet", item["image"], item["label"][0], start, "case0")
    seen = nets["rnet"].seen
    assert len(seen) == sum(s.clicks > 0 for s in steps) >= 2
    label_channel = [x[0, 1].sum().item() for x in seen]
    if refine_from == "initial":  # always the initial segmentation (its voxels lie inside every box)
        assert label_channel == [float(start.sum())] * len(seen)
    else:  # the label of the round before: everything in the first box became tumour
        assert label_channel[1] > label_channel[0]


def test_ball_baseline_uses_the_same_clicks_and_its_radius_is_chosen_on_validation(tmp_path) -> None:
    """No network: balls painted at every click so far on the initial label, the radius with the best mean Dice after
    the last round on the validation cases, stated in the report; the Euclidean scale reaches refine."""
    ev = evaluation(tmp_path, ball_radii=[1, 2, 4], validation_data=cases()[1:], euclidean_scale=5.0)
    item = cases()[1]
    label = item["label"][0]
    start = torch.zeros(20, 22, 16, dtype=torch.long)
    start[6:10, 8:12, 5:9] = 1  # misses most of the tumour: clicks in every round
    by_radius = {r: ev.simulate("balls", item["image"], label, start, "case1", radius=r) for r in (1, 2, 4)}
    rnet = ev.simulate("rnet", item["image"], label, start, "case1")
    assert [(s.foreground.tolist(), s.background.tolist()) for s in by_radius[1]][:1] == [
        (rnet[0].foreground.tolist(), rnet[0].background.tolist())
    ]  # round 1: R-Net's clicks
    seeds = np.zeros((2, *label.shape), np.float32)
    for step in by_radius[2]:
        seeds = np.maximum(seeds, clicks_to_seeds(step.foreground, step.background, tuple(label.shape)))
        torch.testing.assert_close(step.label, paint_balls(start, torch.from_numpy(seeds), 2))  # the initial label
    expected = max((1, 2, 4), key=lambda r: (_dice(by_radius[r][-1].label, label), -r))
    summary = ev.run()
    assert ev.ball_radius == expected and set(ev.ball_choice) == {1, 2, 4}
    assert [s["round"] for s in summary if s["method"] == "Balls at the clicks, no network"] == [1, 2, 3]
    md = (tmp_path / "interactive_evaluation.md").read_text()
    assert f"ball_radius {expected:g} voxels (chosen from 1, 2, 4 by the mean Dice after round 3" in md
    assert "| Balls at the clicks, no network | 3 |" in md and "euclidean_scale 5.0" in md
    assert ev.refiners[-1].key == "rnet_euclidean" and ev.refiners[-1].scale == 5.0
    with pytest.raises(ValueError, match="validation_data: expected the cases the ball radius is chosen on"):
        evaluation(tmp_path, ball_radii=[1, 2])
    with pytest.raises(ValueError, match="ball_radii: expected radii >= 0"):
        evaluation(tmp_path, ball_radii=[-1])


def test_training_samples_draw_the_clicks_of_the_ball_rounds(tmp_path) -> None:
    """R-Net's training sample after k rounds holds the clicks the evaluation's no-network rounds give the same case,
    start label and seed (its stand-in between rounds), in the box refine uses."""
    ev = evaluation(tmp_path, ball_radii=[2], seed=3)
    item = cases()[0]
    start = segment(ev.automatic["pnet_crf"], item["image"])
    rounds = ev.simulate("balls", item["image"], item["label"][0], start, "case0")
    sample = RefinementSampled(margin=3, rounds=3, ball_radius=2, seed=3, **RULE)(
        {"image": item["image"], "pred": start[None], "label": item["label"], "case": "case0"}
    )
    box = refinement_box(start, rounds[-1].seeds, 3)
    torch.testing.assert_close(sample["seeds"], rounds[-1].seeds[(slice(None), *box)])
    assert sample["clicks"] == rounds[-1].clicks_total > RULE["max_clicks"]


def test_slice_choice_reaches_the_clicks(tmp_path) -> None:
    ev = evaluation(tmp_path, slice_choice="per_error_type")
    item = cases()[1]
    start = torch.zeros(20, 22, 16, dtype=torch.long)
    start[6:10, 8:12, 5:9] = 1
    start[15:19, 15:20, 10:14] = 1  # a false positive as well: both kinds of error
    first = ev.simulate("rnet", item["image"], item["label"][0], start, "case1")[0]
    rng = np.random.RandomState(case_seed(0, "case1", 1))
    fg, bg = simulate_clicks(start.numpy(), item["label"][0].numpy(), rng, slice_choice="per_error_type", **RULE)
    np.testing.assert_array_equal(first.foreground, fg)
    np.testing.assert_array_equal(first.background, bg)
    assert ev.settings()["slice_choice"] == "per_error_type"


def test_cases_must_be_indexable_to_be_dealt_over_ranks(tmp_path) -> None:
    with pytest.raises(TypeError, match="data: expected a sequence of cases .* found generator"):
        InteractiveEvaluation((c for c in cases()), output_dir=tmp_path, **networks())
    with pytest.raises(TypeError, match="validation_data: expected a sequence of cases .* found generator"):
        evaluation(tmp_path, ball_radii=[1, 2], validation_data=(c for c in cases()))
