"""common.apps.igs.comparison: Dice per volume (slices pooled) against MONAI's DiceMetric on the stacked volumes,
HD95 / ASSD per volume and class in mm on hand-computed cases, and the written comparison table."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch
from monai.metrics import DiceMetric
from monai.networks.utils import one_hot
from torch import nn

from common.apps.igs import PatternComparison, cache_line_spectra
from common.apps.igs.comparison import pooled_dice, volume_dice, volume_surface_distances

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
    full = next(r for r in rows if r["pattern"] == "full")
    assert full["hd95_rv"] == pytest.approx(13.0) and full["assd_rv"] == pytest.approx(13.0)  # mean of 20 and 6
    assert full["hd95_myocardium"] == pytest.approx(5.0) and full["hd95_lv"] == 0.0  # P2's missed/spurious left out
    assert full["hd95_mean_fg"] == pytest.approx(6.0) and full["assd_mean_fg"] == pytest.approx(6.0)
    assert full["surface_missed"] == 1 and full["surface_spurious"] == 1
    assert full["dice_myocardium"] == 0.0 and full["dice_lv"] == pytest.approx(0.5)  # lv: P1 1, P2 0
    table = list(csv.DictReader(open(tmp_path / "pattern_comparison.csv")))
    assert [float(r["hd95_mean_fg"]) for r in table] == [pytest.approx(6.0)] * 2  # the stand-in ignores the mask
    md = (tmp_path / "pattern_comparison.md").read_text()
    assert "**HD95 (mm), mean over RV, myocardium, LV**" in md and "**ASSD (mm), mean over RV, myocardium, LV**" in md
    assert (
        "| frozen | full (x1) | 6.00 |" in md and "2 (volume, class) pairs missed and 2 spurious" in md
    )  # over both rows
    raw = list(csv.reader(open(tmp_path / "pattern_comparison_hd95_raw.csv")))
    assert raw[0] == ["filename", "rv", "myocardium", "lv", "mean"]
    assert raw[1][0] == "frozen/full/x1/P1/ED" and [float(v) for v in raw[1][1:]] == [
        20.0,
        5.0,
        0.0,
        8.3333,
    ]  # 4 decimals
    assert raw[2][0] == "frozen/full/x1/P2/ED" and raw[2][2:4] == ["nan", "nan"]
    dice = list(csv.reader(open(tmp_path / "pattern_comparison_dice_raw.csv")))
    assert dice[0] == ["filename", *CLASSES, "mean"] and len(dice) == 1 + 2 * 2  # 2 runs x 2 volumes


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
