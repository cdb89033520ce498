"""common.apps.igs.comparison: Dice per volume (slices pooled) against MONAI's DiceMetric on the stacked volumes,
HD95 / ASSD per volume and class in mm on hand-computed cases, the written comparison table (one-sided and distinct
|f| columns, mean +- sd over seeds, both forward models), learned patterns refused when made with another network or
forward model, and the point of the phase model: mirrored line sets stop being equivalent."""

from __future__ import annotations

import csv
import re

import numpy as np
import pytest
import torch
from monai.metrics import DiceMetric
from monai.networks.utils import one_hot
from torch import nn

from common.apps.igs import (
    INTERVAL_COLUMNS,
    PatternComparison,
    cache_line_spectra,
    finding,
    igs_loss,
    mask_loss,
    weights_digest,
)
from common.apps.igs.comparison import learned_pattern_file
from common.apps.igs.evaluation import pooled_dice, volume_dice, volume_surface_distances
from common.transforms import distinct_frequencies, line_mask, save_line_pattern, zscore_slices
from common.utils.stats import paired_bootstrap

CLASSES = ["background", "rv", "myocardium", "lv"]


class FixedLogits(nn.Module):
    """A network stand-in that ignores its input and returns the one-hot logits of fixed class maps ``(N, H, W)``:
    the slices must come in one batch, in the order of the maps."""

    def __init__(self, maps: np.ndarray, num_classes: int = len(CLASSES)) -> None:
        super().__init__()
        self.register_buffer("logits", one_hot(torch.as_tensor(maps)[:, None].long(), num_classes, dim=1).float())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] != self.logits.shape[0]:
            raise ValueError(f"x: expected all {self.logits.shape[0]} slices in one batch, found {x.shape[0]}")
        return self.logits.to(x.device)


def _items(labels: np.ndarray, keys: list[tuple[str, str, int]], spacing: dict[str, tuple[float, ...]]) -> list[dict]:
    rng = np.random.default_rng(0)
    return [
        {
            "image": rng.uniform(0, 1, (1, *label.shape)).astype(np.float32),
            "label": label[None].astype(np.float32),
            "patient": patient,
            "phase": phase,
            "slice": s,
            "spacing": np.asarray(spacing[patient], dtype=np.float64),
        }
        for label, (patient, phase, s) in zip(labels, keys)
    ]


def _dice_case() -> tuple[np.ndarray, np.ndarray, list[tuple[str, str, int]]]:
    """Three volumes (3, 4 and 3 slices of 12 x 14) of random blobs, listed out of slice order, with one class absent
    from both masks (P1/ES lv), one spurious (P2/ED myocardium: prediction only) and one missed (P1/ED rv)."""
    rng = np.random.default_rng(3)
    keys = [("P1", "ED", s) for s in (2, 0, 1)] + [("P1", "ES", s) for s in (3, 1, 0, 2)]
    keys += [("P2", "ED", s) for s in (0, 2, 1)]
    gt = rng.integers(0, 4, (len(keys), 12, 14))
    pred = np.where(rng.uniform(size=gt.shape) < 0.7, gt, rng.integers(0, 4, gt.shape))
    for i, (patient, phase, _) in enumerate(keys):
        if (patient, phase) == ("P1", "ES"):
            gt[i][gt[i] == 3], pred[i][pred[i] == 3] = 0, 0
        if (patient, phase) == ("P2", "ED"):
            gt[i][gt[i] == 2] = 1
        if (patient, phase) == ("P1", "ED"):
            pred[i][pred[i] == 1] = 0
    return pred, gt, keys


def test_volume_dice_is_dicemetric_on_the_stacked_volumes_except_for_empty_classes():
    """``volume_dice`` pools a volume's slices, so it equals MONAI's ``DiceMetric(include_background=True,
    reduction="none")`` on the volume stacked to ``(K, H, W, D)`` wherever the ground truth of the class is non-empty,
    with either ``ignore_empty``. The two differ only on classes empty in the ground truth:

    - empty in both: ours NaN (absent, left out of the means); ``ignore_empty=True`` NaN as well;
      ``ignore_empty=False`` 1.
    - empty ground truth, non-empty prediction (spurious): ours 0; ``ignore_empty=False`` 0; ``ignore_empty=True``
      NaN (MONAI then ignores the false positives altogether).
    """
    pred, gt, keys = _dice_case()
    items = _items(gt, keys, {"P1": (1.0, 1.0, 5.0), "P2": (1.0, 1.0, 5.0)})
    batches = cache_line_spectra(items, batch_size=len(items))
    volumes = [f"{p}/{ph}" for p, ph, _ in keys]
    ours = volume_dice(FixedLogits(pred), batches, volumes, torch.ones(14), len(CLASSES), normalize=None)
    np.testing.assert_array_equal(ours, pooled_dice(torch.as_tensor(pred), torch.as_tensor(gt), volumes, 4))
    names = sorted(set(volumes))
    assert names == ["P1/ED", "P1/ES", "P2/ED"] and ours.shape == (3, 4)
    monai = {}
    for ignore_empty in (True, False):
        metric = DiceMetric(include_background=True, reduction="none", ignore_empty=ignore_empty)
        rows = []
        for name in names:
            order = sorted((s, i) for i, (p, ph, s) in enumerate(keys) if f"{p}/{ph}" == name)
            idx = [i for _, i in order]
            stack = [one_hot(torch.as_tensor(m[idx]).permute(1, 2, 0)[None, None], 4, dim=1) for m in (pred, gt)]
            rows.append(metric(*stack)[0].numpy())
        monai[ignore_empty] = np.stack(rows)
    gt_empty = np.array([[not (gt[[v == n for v in volumes]] == c).any() for c in range(4)] for n in names])
    pred_empty = np.array([[not (pred[[v == n for v in volumes]] == c).any() for c in range(4)] for n in names])
    both, spurious, missed = gt_empty & pred_empty, gt_empty & ~pred_empty, ~gt_empty & pred_empty
    assert both[1, 3] and spurious[2, 2] and missed[0, 1] and both.sum() == spurious.sum() == missed.sum() == 1
    np.testing.assert_allclose(ours, np.where(both, np.nan, monai[False]), rtol=1e-6)
    np.testing.assert_allclose(ours, np.where(spurious, 0.0, monai[True]), rtol=1e-6)
    assert ours[0, 1] == 0.0 and np.isnan(monai[True][2, 2]) and monai[False][1, 3] == 1.0


def _hand_case() -> tuple[np.ndarray, np.ndarray, list[tuple[str, str, int]], dict]:
    """Two volumes with single-pixel structures, so every distance is one pixel-to-pixel distance:

    - P1/ED, spacing (1.25, 1.25, 10): rv at (3, 3) in slice 0 (gt) vs slice 2 (pred): 20 mm; myocardium at column 2
      (gt) vs 6 (pred), same row and slice: 4 * 1.25 = 5 mm; lv the same 3 x 3 square: 0 mm.
    - P2/ED, spacing (0.5, 0.5, 6): rv in slice 0 (gt) vs slice 1 (pred): 6 mm; myocardium missed (gt only);
      lv spurious (prediction only).

    Slices are listed out of order (stacking must sort by ``slice``)."""
    keys = [("P1", "ED", 2), ("P2", "ED", 1), ("P1", "ED", 0), ("P2", "ED", 0), ("P1", "ED", 1)]
    gt, pred = np.zeros((5, 12, 12), np.int64), np.zeros((5, 12, 12), np.int64)
    at = {k: i for i, k in enumerate(keys)}
    gt[at[("P1", "ED", 0)], 3, 3] = 1
    pred[at[("P1", "ED", 2)], 3, 3] = 1
    gt[at[("P1", "ED", 1)], 6, 2] = 2
    pred[at[("P1", "ED", 1)], 6, 6] = 2
    gt[at[("P1", "ED", 1)], 8:11, 8:11] = 3
    pred[at[("P1", "ED", 1)], 8:11, 8:11] = 3
    gt[at[("P2", "ED", 0)], 2, 2] = 1
    pred[at[("P2", "ED", 1)], 2, 2] = 1
    gt[at[("P2", "ED", 0)], 9, 9] = 2
    pred[at[("P2", "ED", 1)], 5, 5] = 3
    return pred, gt, keys, {"P1": (1.25, 1.25, 10.0), "P2": (0.5, 0.5, 6.0)}


def test_surface_distances_per_volume_by_hand():
    pred, gt, keys, spacing = _hand_case()
    items = _items(gt, keys, spacing)
    d = volume_surface_distances(torch.as_tensor(pred), torch.as_tensor(gt), items, len(CLASSES))
    assert d.unit == "mm" and d.hd95.shape == (2, 3)  # volumes P1/ED, P2/ED; classes rv, myocardium, lv
    np.testing.assert_allclose(d.hd95, [[20.0, 5.0, 0.0], [6.0, np.nan, np.nan]], rtol=1e-5)
    np.testing.assert_allclose(d.assd, d.hd95, rtol=1e-5)
    np.testing.assert_array_equal(d.missed, [[False, False, False], [False, True, False]])
    np.testing.assert_array_equal(d.spurious, [[False, False, False], [False, False, True]])
    no_spacing = [{k: v for k, v in item.items() if k != "spacing"} for item in items]
    px = volume_surface_distances(torch.as_tensor(pred), torch.as_tensor(gt), no_spacing, len(CLASSES))
    assert px.unit == "px" and px.hd95[0, 0] == pytest.approx(2.0) and px.hd95[0, 1] == pytest.approx(4.0)


def test_comparison_rows_have_hd95_and_assd_columns(tmp_path):
    pred, gt, keys, spacing = _hand_case()
    items = _items(gt, keys, spacing)
    comparison = PatternComparison(
        FixedLogits(pred),
        [],
        items,
        tmp_path,
        tmp_path,
        CLASSES,
        accelerations=[4],
        patterns=["center"],
        protocols=["frozen"],
        batch_size=len(items),
    )
    rows = comparison.run()
    assert [(r["forward_model"], r["pattern"]) for r in rows] == [
        ("phase", "full"),
        ("phase", "center"),
        ("magnitude", "full"),
        ("magnitude", "center"),
    ]
    full = rows[0]
    assert full["hd95_rv"] == pytest.approx(13.0) and full["assd_rv"] == pytest.approx(13.0)  # mean of 20 and 6
    assert full["hd95_myocardium"] == pytest.approx(5.0) and full["hd95_lv"] == 0.0  # P2's missed/spurious left out
    assert full["hd95_mean_fg"] == pytest.approx(6.0) and full["assd_mean_fg"] == pytest.approx(6.0)
    assert full["surface_missed"] == 1 and full["surface_spurious"] == 1
    assert full["dice_myocardium"] == 0.0 and full["dice_lv"] == pytest.approx(0.5)  # lv: P1 1, P2 0
    table = list(csv.DictReader(open(tmp_path / "pattern_comparison.csv")))
    assert [float(r["hd95_mean_fg"]) for r in table] == [pytest.approx(6.0)] * 4  # the stand-in ignores the mask
    md = (tmp_path / "pattern_comparison.md").read_text()
    assert "**HD95 (mm), mean over rv, myocardium, lv**" in md and "**ASSD (mm), mean over rv, myocardium, lv**" in md
    assert (
        "| frozen | full (x1) | 1 | 6.00 |" in md and "4 (volume, class) pairs missed and 4 spurious" in md
    )  # over all four rows
    raw = list(csv.reader(open(tmp_path / "pattern_comparison_hd95_raw.csv")))
    assert raw[0] == ["filename", "rv", "myocardium", "lv", "mean"]
    assert raw[1][0] == "phase/frozen/full/x1/-/P1/ED" and [float(v) for v in raw[1][1:]] == [
        20.0,
        5.0,
        0.0,
        8.3333,
    ]  # 4 decimals
    assert raw[2][0] == "phase/frozen/full/x1/-/P2/ED" and raw[2][2:4] == ["nan", "nan"]
    dice = list(csv.reader(open(tmp_path / "pattern_comparison_dice_raw.csv")))
    assert dice[0] == ["filename", *CLASSES, "mean"] and len(dice) == 1 + 4 * 2  # 4 runs x 2 volumes
    fg = list(csv.reader(open(tmp_path / "pattern_comparison_dice_fg_raw.csv")))  # the scored structures
    assert fg[0] == ["filename", "rv", "myocardium", "lv", "mean"]
    assert [r[0] for r in fg[1:]] == [r[0] for r in dice[1:]]  # the same runs and volumes
    assert fg[1][1:4] == dice[1][2:5] and float(fg[1][4]) == pytest.approx(1 / 3, abs=1e-4)
    assert "## Paired differences against the best baseline" in md and "No cell holds a baseline" in md  # center only
    assert not (tmp_path / "pattern_comparison_intervals.csv").exists()


def test_bad_items():
    pred, gt, keys, spacing = _hand_case()
    items = _items(gt, keys, spacing)
    p, g = torch.as_tensor(pred), torch.as_tensor(gt)
    with pytest.raises(
        ValueError, match="items: expected 'spacing' in every slice dict or in none, found it in 4 of 5"
    ):
        volume_surface_distances(p, g, [{k: v for k, v in items[0].items() if k != "spacing"}, *items[1:]], 4)
    with pytest.raises(ValueError, match=r"items: expected one spacing per volume, found .* in volume P1/ED"):
        volume_surface_distances(p, g, [{**items[0], "spacing": np.ones(3)}, *items[1:]], 4)
    with pytest.raises(
        ValueError, match=r"items: expected distinct 'slice' numbers in volume P1/ED, found \[0, 0, 1\]"
    ):
        volume_surface_distances(p, g, [{**items[0], "slice": 0}, *items[1:]], 4)
    with pytest.raises(ValueError, match="pred, label, items: expected 4 slices"):
        volume_surface_distances(p, g, items[:4], 4)


WIDTH = 32


def _heart_items(patients: list[str], seed: int) -> list[dict]:
    """Heart-like slices ``(1, 32, 32)``: LV disc (3) in a myocardium ring (2), an RV disc (1) beside it, each class a
    flat intensity (its label value), the centre moving per slice; two phases and three slices per patient."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:WIDTH, :WIDTH]
    items = []
    for patient in patients:
        for phase in ("ED", "ES"):
            for s in range(3):
                cy, cx = 16 + rng.integers(-3, 4), 13 + rng.integers(-3, 4)
                r = np.hypot(yy - cy, xx - cx)
                label = np.zeros((WIDTH, WIDTH), np.int64)
                label[np.hypot(yy - cy, xx - cx - 9) < 4.5] = 1
                label[r < 6.5] = 2
                label[r < 4.0 + 0.5 * s] = 3
                items.append(
                    {
                        "image": label[None].astype(np.float32),
                        "label": label[None].astype(np.float32),
                        "patient": patient,
                        "phase": phase,
                        "slice": s,
                        "spacing": np.array([1.5, 1.5, 8.0]),
                    }
                )
    return items


class BandNet(nn.Module):
    """A tiny network: a 1x1 convolution whose argmax bands the (z-scored) intensity, class ``k`` between thresholds
    ``t_k`` and ``t_{k+1}`` (``logit_k = s (k z - t_1 - ... - t_k)``); fine-tunable like any network."""

    def __init__(self, thresholds: list[float], sharpness: float = 4.0) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, len(thresholds) + 1, 1)
        k = torch.arange(len(thresholds) + 1, dtype=torch.float32)
        with torch.no_grad():
            self.conv.weight.copy_((sharpness * k).view(-1, 1, 1, 1))
            self.conv.bias.copy_(-sharpness * torch.cat([torch.zeros(1), torch.cumsum(torch.tensor(thresholds), 0)]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


def _band_net(items: list[dict]) -> BandNet:
    """Thresholds halfway between the classes' mean z-scored intensities of the fully sampled slices."""
    z = zscore_slices(torch.as_tensor(np.stack([d["image"] for d in items])))
    labels = torch.as_tensor(np.stack([d["label"] for d in items]))
    levels = [float(z[labels == c].mean()) for c in range(len(CLASSES))]
    return BandNet([(a + b) / 2 for a, b in zip(levels, levels[1:])])


@pytest.fixture(scope="module")
def heart() -> tuple[list[dict], list[dict], BandNet]:
    train, test = _heart_items(["T1", "T2", "T3", "T4"], 0), _heart_items(["P1", "P2", "P3"], 1)
    return train, test, _band_net(train)


def _save_learned(folder, name: str, mask: torch.Tensor, fm: str, acc: int, **fingerprint: object) -> None:
    save_line_pattern(
        learned_pattern_file(folder, name, fm, acc), mask, fingerprint={"forward_model": fm, **fingerprint}
    )


def test_one_sided_and_distinct_f_columns(tmp_path, heart):
    train, test, net = heart
    rows = PatternComparison(
        net,
        train,
        test,
        tmp_path,
        tmp_path,
        CLASSES,
        accelerations=[4, 8],
        patterns=["center", "one_sided"],
        protocols=["frozen"],
        forward_models=["magnitude"],
    ).run()
    full = rows[0]
    assert full["pattern"] == "full" and full["mean_fg"] > 0.95  # the band network segments fully sampled slices
    assert (full["lines"], full["distinct_f"], full["seed"]) == (WIDTH, WIDTH // 2 + 1, None)
    for r in rows[1:]:
        n = WIDTH // r["acceleration"]
        assert r["lines"] == n and r["seed"] is None
        assert r["distinct_f"] == distinct_frequencies(line_mask(r["pattern"], WIDTH, r["acceleration"]))
        assert r["distinct_f"] == (n if r["pattern"] == "one_sided" else n // 2 + 1)  # centre: half on mirrors
    table = list(csv.DictReader(open(tmp_path / "pattern_comparison.csv")))
    assert list(table[0])[:7] == ["forward_model", "protocol", "pattern", "acceleration", "seed", "lines", "distinct_f"]
    assert [(r["pattern"], r["acceleration"], r["seed"], r["distinct_f"]) for r in table] == [
        ("full", "1", "", "17"),
        ("center", "4", "", "5"),
        ("one_sided", "4", "", "8"),
        ("center", "8", "", "3"),
        ("one_sided", "8", "", "4"),
    ]
    md = (tmp_path / "pattern_comparison.md").read_text()
    assert "| center | 1 | 8 / 5 | 4 / 3 |" in md and "| one_sided | 1 | 8 / 8 | 4 / 4 |" in md
    intervals = list(csv.DictReader(open(tmp_path / "pattern_comparison_intervals.csv")))
    assert tuple(intervals[0]) == INTERVAL_COLUMNS
    assert [(r["acceleration"], r["pattern"], r["reference"]) for r in intervals] == [
        (a, p, ref) for a in ("4", "8") for p, ref in (("center", "one_sided"), ("one_sided", "center"))
    ]  # two baselines: the best against the next best, the other against the best
    raw = csv.DictReader(open(tmp_path / "pattern_comparison_dice_fg_raw.csv"))
    fg = {r["filename"]: float(r["mean"]) for r in raw}  # each volume's mean_fg, to 4 decimals
    volumes = sorted({k.split("/", 5)[5] for k in fg})
    assert len(volumes) == 6  # 3 patients x 2 phases
    for r in intervals:
        values = {
            p: np.array([fg[f"magnitude/frozen/{p}/x{r['acceleration']}/-/{v}"] for v in volumes])
            for p in (r["pattern"], r["reference"])
        }
        expected = paired_bootstrap(values[r["pattern"]], values[r["reference"]])
        assert int(r["n"]) == expected.n == 6 and int(r["wins"]) == expected.wins_a
        found = [float(r[k]) for k in ("difference", "ci_low", "ci_high")]
        assert found == pytest.approx([expected.difference, expected.low, expected.high], abs=2e-4)
        assert f"- {finding(r)}\n" in md


def test_seeded_patterns_are_mean_and_sample_sd_over_seeds(tmp_path, heart):
    train, test, net = heart
    rows = PatternComparison(
        net,
        train,
        test,
        tmp_path,
        tmp_path,
        CLASSES,
        accelerations=[4],
        patterns=["equispaced", "random"],
        forward_models=["magnitude"],
        seeds=[0, 1, 2],
        fine_tune_seeds=[1],
        center_fractions={4: 0.1},
        fine_tune_epochs=1,
        batch_size=8,
    ).run()
    table = list(csv.DictReader(open(tmp_path / "pattern_comparison.csv")))
    assert len(table) == len(rows) == 2 * 1 + 2 * 3 + 2 * 1  # full per protocol; 3 frozen and 1 fine-tuned seed each
    md = (tmp_path / "pattern_comparison.md").read_text()
    assert "(frozen: 3, fine_tuned: 1)" in md
    for pattern in ("equispaced", "random"):
        frozen = [r for r in table if r["protocol"] == "frozen" and r["pattern"] == pattern]
        assert [r["seed"] for r in frozen] == ["0", "1", "2"]
        masks = [line_mask(pattern, WIDTH, 4, 0.1, seed=s) for s in (0, 1, 2)]
        assert [int(r["distinct_f"]) for r in frozen] == [distinct_frequencies(m) for m in masks]
        fg, mean = (np.array([float(r[k]) for r in frozen]) for k in ("mean_fg", "mean"))
        assert fg.std() > 0  # the draws differ, so the sd says something
        cell = f"{fg.mean():.3f} +- {fg.std(ddof=1):.3f} ({mean.mean():.3f} +- {mean.std(ddof=1):.3f})"
        assert f"| frozen | {pattern} | 3 | {cell} |" in md
        hd = np.array([float(r["hd95_mean_fg"]) for r in frozen])
        assert f"| frozen | {pattern} | 3 | {hd.mean():.2f} +- {hd.std(ddof=1):.2f} |" in md
        (tuned,) = [r for r in table if r["protocol"] == "fine_tuned" and r["pattern"] == pattern]
        assert tuned["seed"] == "1"
        assert f"| fine_tuned | {pattern} | 1 | {float(tuned['mean_fg']):.3f} ({float(tuned['mean']):.3f}) |" in md


def test_learned_pattern_made_with_another_network_or_forward_model_is_refused(tmp_path, heart):
    train, test, net = heart
    mask = line_mask("one_sided", WIDTH, 4)
    args = dict(accelerations=[4], patterns=["igs", "center"], protocols=["frozen"], forward_models=["phase"])
    out = tmp_path / "eval"
    sidecar = tmp_path / "igs_phase_x4.json"
    _save_learned(tmp_path, "igs", mask, "phase", 4, weights=weights_digest(BandNet([0.0, 1.0, 2.0])))
    with pytest.raises(ValueError, match=re.escape(str(sidecar)) + r": made with other settings \(weights: expected"):
        PatternComparison(net, train, test, out, tmp_path, CLASSES, **args).run()
    save_line_pattern(
        tmp_path / "igs_phase_x4", mask, fingerprint={"weights": weights_digest(net), "forward_model": "magnitude"}
    )
    with pytest.raises(
        ValueError, match=r"igs_phase_x4\.json: made with other settings \(forward_model: expected 'phase'"
    ):
        PatternComparison(net, train, test, out, tmp_path, CLASSES, **args).run()
    save_line_pattern(tmp_path / "igs_phase_x4", mask)  # written before fingerprints existed
    with pytest.raises(ValueError, match=r"igs_phase_x4\.json: expected a fingerprint .* found none"):
        PatternComparison(net, train, test, out, tmp_path, CLASSES, **args).run()
    _save_learned(tmp_path, "igs", line_mask("center", WIDTH, 8), "phase", 4, weights=weights_digest(net))
    with pytest.raises(ValueError, match=r"igs_phase_x4\.npy: expected 8 lines \(width 32 // x4\) per pattern row"):
        PatternComparison(net, train, test, out, tmp_path, CLASSES, **args).run()
    assert not out.exists()  # refused before anything is computed or written
    _save_learned(tmp_path, "igs", mask, "phase", 4, weights=weights_digest(net))
    rows = PatternComparison(net, train, test, out, tmp_path, CLASSES, **args).run()
    igs = next(r for r in rows if r["pattern"] == "igs")
    one_sided = PatternComparison(net, train, test, out, tmp_path, CLASSES, **{**args, "patterns": ["one_sided"]}).run()
    assert igs["mean_fg"] == one_sided[1]["mean_fg"] and igs["distinct_f"] == 8  # the file's lines were used


def test_missing_learned_patterns_are_all_named_with_the_command_that_writes_them(tmp_path, heart):
    train, test, net = heart
    _save_learned(tmp_path, "igs", line_mask("one_sided", WIDTH, 4), "phase", 4, weights=weights_digest(net))
    comparison = PatternComparison(
        net,
        train,
        test,
        tmp_path / "eval",
        tmp_path,
        CLASSES,
        accelerations=[4],
        patterns=["igs", "loupe", "igs_lookahead", "center"],
        protocols=["frozen"],
    )
    with pytest.raises(FileNotFoundError) as e:
        comparison.run()
    text = str(e.value)
    assert "5 learned pattern file(s) missing" in text  # all at once: igs magnitude, loupe and igs_lookahead twice
    assert (
        f"{tmp_path / 'igs_magnitude_x4.npy'}: expected the learned 'igs' pattern (magnitude forward model, x4)" in text
    )
    assert "configs/igs_search.json']\" --igs_forward_model magnitude`, or drop 'igs' from patterns" in text
    assert f"{tmp_path / 'loupe_phase_x4.npy'}: expected" in text
    assert "configs/loupe.json']\" --loupe_forward_model phase`" in text
    assert "igs_lookahead_phase_x4.npy" in text and "drop 'igs_lookahead' from patterns" in text
    sources = {"igs_lookahead": ["igs_search.json", "igs_forward_model"]}  # a search variant: its config and setting
    with pytest.raises(FileNotFoundError, match=r"igs_lookahead_magnitude_x4\.npy: .*--igs_forward_model magnitude`"):
        PatternComparison(
            net,
            train,
            test,
            tmp_path / "eval",
            tmp_path,
            CLASSES,
            accelerations=[4],
            patterns=["igs_lookahead"],
            protocols=["frozen"],
            pattern_sources=sources,
        ).run()
    assert "igs_phase_x4.npy" not in text


def test_both_forward_models_appear_in_rows_markdown_and_figure(tmp_path, heart):
    train, test, net = heart
    rows = PatternComparison(
        net,
        train,
        test,
        tmp_path,
        tmp_path,
        CLASSES,
        accelerations=[4, 8],
        patterns=["center", "one_sided"],
        protocols=["frozen", "fine_tuned"],
        fine_tune_epochs=1,
        batch_size=8,
    ).run()
    assert {(r["forward_model"], r["protocol"]) for r in rows} == {
        (fm, p) for fm in ("phase", "magnitude") for p in ("frozen", "fine_tuned")
    }
    assert len(rows) == 2 * 2 * (1 + 2 * 2)
    full = {(r["forward_model"], r["protocol"]): r["mean_fg"] for r in rows if r["pattern"] == "full"}
    assert full[("phase", "frozen")] == pytest.approx(full[("magnitude", "frozen")], abs=1e-6)  # full: same image
    md = (tmp_path / "pattern_comparison.md").read_text()
    assert md.index("## Forward model: phase") < md.index("## Forward model: magnitude")
    assert 'Forward model "phase": the phase-aware model (on by default)' in md
    assert 'Forward model "magnitude": the paper\'s setting' in md
    phase_section = md[md.index("## Forward model: phase") : md.index("## Forward model: magnitude")]
    for table in ("**Lines sampled / distinct |f| covered**", "**Dice, mean over rv, myocardium, lv (in brackets"):
        assert table in phase_section
    assert "| fine_tuned | full (x1) | 1 |" in phase_section and "**HD95 (mm)" in phase_section
    png = tmp_path / "dice_vs_acceleration.png"
    from PIL import Image

    width, height = Image.open(png).size
    assert png.stat().st_size > 1000 and height > width * 0.6  # two rows (forward models) of two panels (protocols)


def test_phase_model_breaks_the_mirror_equivalence(tmp_path, heart):
    """Lines ``c - n + 1 .. c`` are the mirror of the one-sided block ``c .. c + n - 1``: on a magnitude image (the
    paper's model) they give the same image magnitude, so equal Dice; with an image phase they do not."""
    train, test, net = heart
    c = WIDTH // 2
    for acc in (4, 8):
        n = WIDTH // acc
        mirrored = torch.zeros(WIDTH)
        mirrored[c - n + 1 : c + 1] = 1.0
        assert distinct_frequencies(mirrored) == n
        for fm in ("phase", "magnitude"):
            _save_learned(tmp_path, "mirrored", mirrored, fm, acc, weights=weights_digest(net))
    rows = PatternComparison(
        net,
        train,
        test,
        tmp_path,
        tmp_path,
        CLASSES,
        accelerations=[4, 8],
        patterns=["one_sided", "mirrored"],
        protocols=["frozen"],
    ).run()
    dice = {(r["forward_model"], r["pattern"], r["acceleration"]): r["mean_fg"] for r in rows}
    gaps = {
        fm: [abs(dice[(fm, "one_sided", a)] - dice[(fm, "mirrored", a)]) for a in (4, 8)]
        for fm in ("phase", "magnitude")
    }
    assert max(gaps["magnitude"]) < 1e-6  # mirror lines are free under the paper's model
    assert max(gaps["phase"]) > 0.01, gaps  # not with a phase


def test_bad_arguments(tmp_path, heart):
    train, test, net = heart
    base = (net, train, test, tmp_path, tmp_path, CLASSES)
    with pytest.raises(ValueError, match=r"patterns: expected distinct baselines .* found \['full'\]"):
        PatternComparison(*base, patterns=["full"])
    with pytest.raises(ValueError, match="patterns: expected"):
        PatternComparison(*base, patterns=["../igs"])
    with pytest.raises(ValueError, match=r"forward_models: expected distinct entries of \('magnitude', 'phase'\)"):
        PatternComparison(*base, forward_models=["complex"])
    with pytest.raises(ValueError, match=r"fine_tune_seeds: expected distinct seeds among seeds \[0, 1\], found \[2\]"):
        PatternComparison(*base, seeds=[0, 1], fine_tune_seeds=[2])
    with pytest.raises(ValueError, match="train_phase_seed, test_phase_seed: expected different phase seed bases"):
        PatternComparison(*base, train_phase_seed=3, test_phase_seed=3)
    with pytest.raises(ValueError, match=r"pattern_sources: expected \(config file, forward-model setting id\)"):
        PatternComparison(*base, pattern_sources={"igs_lookahead": ["igs_search.json"]})


def test_search_loss_column_is_each_patterns_loss_on_the_training_slices(tmp_path, heart):
    train, test, net = heart
    args = dict(accelerations=[4], patterns=["center", "random"], forward_models=["phase"], seeds=[0, 1])
    rows = PatternComparison(
        net,
        train,
        test,
        tmp_path,
        tmp_path,
        CLASSES,
        protocols=["frozen"],
        batch_size=8,
        **args,
        search_loss="dice_pooled",
        search_loss_batch=4,
    ).run()
    batches = cache_line_spectra(train, batch_size=4, forward_model="phase", phase_seed_base=0)  # training phases
    loss = igs_loss("dice_pooled")
    for r in rows:
        mask = (
            line_mask("full", WIDTH) if r["pattern"] == "full" else line_mask(r["pattern"], WIDTH, 4, 0.08, r["seed"])
        )
        assert r["search_loss"] == pytest.approx(mask_loss(net, batches, mask, loss, loss_batch=4), abs=1e-6)
    md = (tmp_path / "pattern_comparison.md").read_text()
    random = np.array([r["search_loss"] for r in rows if r["pattern"] == "random"])
    assert "**Search loss** (`dice_pooled`" in md
    assert f"| phase | random | {random.mean():.4f} +- {random.std(ddof=1):.4f} |" in md
    plain = PatternComparison(net, train, test, tmp_path / "b", tmp_path, CLASSES, protocols=["frozen"], **args).run()
    assert (
        "search_loss" not in plain[0]
        and "**Search loss**" not in (tmp_path / "b" / "pattern_comparison.md").read_text()
    )


def test_a_stopped_comparison_resumes_with_the_rows_of_one_run_and_refuses_other_settings(tmp_path, heart, monkeypatch):
    """Each finished row is saved at once: a run stopped during its third fine-tuning resumes with the two finished
    rows and fine-tunes only the others, giving the rows of an uninterrupted run; other settings are refused."""
    import common.apps.igs.comparison as comparison

    train, test, net = heart
    args = dict(
        accelerations=[4],
        patterns=["center", "one_sided", "equispaced"],
        forward_models=["magnitude"],
        seeds=[0, 1],
        center_fractions={4: 0.1},
        fine_tune_epochs=1,
        batch_size=8,
    )
    whole = PatternComparison(net, train, test, tmp_path / "whole", tmp_path, CLASSES, **args).run()
    fine_tune, calls = comparison.fine_tune, []

    def stopping(*a, **k):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt  # the process stopped during the third fine-tuning
        return fine_tune(*a, **k)

    monkeypatch.setattr(comparison, "fine_tune", stopping)
    out = tmp_path / "resumed"
    with pytest.raises(KeyboardInterrupt):
        PatternComparison(net, train, test, out, tmp_path, CLASSES, **args).run()
    assert (out / comparison.STATE_FILE).is_file() and not (out / "pattern_comparison.csv").exists()
    calls.clear()
    monkeypatch.setattr(comparison, "fine_tune", lambda *a, **k: (calls.append(1), fine_tune(*a, **k))[1])
    resumed = PatternComparison(net, train, test, out, tmp_path, CLASSES, **args).run()
    assert len(calls) == 4 - 2  # center, one_sided, equispaced seeds 0 and 1 fine-tuned; two finished before
    assert resumed == whole
    assert (out / "pattern_comparison.csv").read_text() == (tmp_path / "whole" / "pattern_comparison.csv").read_text()
    calls.clear()
    again = PatternComparison(net, train, test, out, tmp_path, CLASSES, **args).run()
    assert not calls and again == whole  # every row finished: nothing is run again
    with pytest.raises(ValueError, match=rf"{out / comparison.STATE_FILE}.*fine_tune_epochs"):
        PatternComparison(net, train, test, out, tmp_path, CLASSES, **{**args, "fine_tune_epochs": 2}).run()
