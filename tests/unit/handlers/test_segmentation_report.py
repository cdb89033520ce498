"""common.metrics.segmentation and common.handlers.segmentation_report: per-volume and per-slice Dice,
largest-component post-processing, surface distances in mm or pixels, the written report."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest
import torch
from ignite.engine import Engine

from common.handlers import SegmentationReport
from common.metrics import SCORES, binary_volume_scores, summarise, surface_distances


def _volume(*boxes):
    v = torch.zeros(1, 16, 16, 6)
    for y0, y1, x0, x1, z0, z1 in boxes:
        v[0, y0:y1, x0:x1, z0:z1] = 1
    return v


def test_perfect_and_empty_predictions():
    gt = _volume((4, 8, 4, 8, 1, 3))
    scores = binary_volume_scores(gt, gt)
    assert scores["dice_volume"] == scores["dice_volume_lcc"] == scores["dice_slice_tumour"] == 1.0
    assert scores["dice_slice_all"] == 1.0 and scores["tumour_slices"] == 2 and scores["label_voxels"] == 32
    empty = binary_volume_scores(torch.zeros_like(gt), gt)
    assert empty["dice_volume"] == 0 and empty["dice_slice_tumour"] == 0
    assert empty["dice_slice_all"] == pytest.approx(4 / 6)
    assert empty["surface"] == "missed" and math.isnan(empty["hd95_px"]) and math.isnan(empty["assd_px"])
    none = binary_volume_scores(torch.zeros_like(gt), torch.zeros_like(gt))
    assert none["dice_volume"] == 1.0 and math.isnan(none["dice_slice_tumour"]) and none["dice_slice_all"] == 1.0
    assert none["surface"] == "absent" and math.isnan(none["hd95_px"])
    spurious = binary_volume_scores(gt, torch.zeros_like(gt))
    assert spurious["surface"] == "spurious" and math.isnan(spurious["assd_px"])
    assert scores["surface"] == "measured" and scores["hd95_px"] == 0.0 and scores["assd_px"] == 0.0


def test_surface_distances_in_pixels_or_mm():
    gt = _volume((4, 10, 4, 10, 1, 4))
    pred = _volume((4, 10, 6, 10, 1, 4))  # 2 columns narrower: the left face is 2 columns away
    px = binary_volume_scores(pred, gt)
    mm = binary_volume_scores(pred, gt, spacing=(0.5, 0.75, 3.0))
    assert "hd95_mm" not in px and "hd95_px" not in mm
    assert px["hd95_px"] == pytest.approx(2.0) and mm["hd95_mm"] == pytest.approx(1.5)
    reference = surface_distances(pred[None], gt[None], (0.5, 0.75, 3.0), include_background=True)
    assert mm["assd_mm"] == pytest.approx(reference.assd[0, 0]) and 0 < mm["assd_mm"] < 1.5
    assert "(mm)" in SCORES["hd95_mm"] and "pixels" in SCORES["hd95_px"] and "per slice" in SCORES["assd_px"]


def test_largest_component_removes_a_false_blob():
    gt = _volume((4, 10, 4, 10, 1, 4))  # 108 voxels
    pred = _volume((4, 10, 4, 10, 1, 4), (13, 15, 13, 15, 5, 6))  # plus a separate 4-voxel false positive
    scores = binary_volume_scores(pred, gt)
    assert scores["dice_volume"] == pytest.approx(2 * 108 / (112 + 108))
    assert scores["dice_volume_lcc"] == 1.0
    assert scores["dice_slice_tumour"] == 1.0 and scores["dice_slice_all"] == pytest.approx(5 / 6)


def test_volume_dice_pools_slices():
    gt = _volume((0, 4, 0, 4, 0, 1), (0, 8, 0, 8, 1, 2))  # 16 and 64 voxels
    pred = _volume((0, 8, 0, 8, 1, 2))  # misses the small slice entirely
    scores = binary_volume_scores(pred, gt)
    assert scores["dice_volume"] == pytest.approx(2 * 64 / (64 + 80))
    assert scores["dice_slice_tumour"] == pytest.approx(0.5)  # slice mean weighs the small slice equally


def test_summarise_leaves_out_nan():
    s = summarise([{"a": 0.5}, {"a": 1.0}, {"a": math.nan}], keys=["a"])["a"]
    assert s == {"mean": 0.75, "std": 0.25, "median": 0.75, "min": 0.5, "max": 1.0, "n": 2}
    assert summarise([{"a": math.nan}], keys=["a"])["a"]["n"] == 0
    rows = [{"dice_volume": 1.0, "hd95_mm": 2.0, "slices": 3}, {"dice_volume": 0.5, "hd95_mm": math.nan, "slices": 3}]
    s = summarise(rows)  # default: the SCORES present in the rows
    assert list(s) == ["dice_volume", "hd95_mm"] and s["hd95_mm"]["n"] == 1 and s["hd95_mm"]["mean"] == 2.0


def test_handler_writes_csv_markdown_and_figure(tmp_path):
    gt = _volume((4, 10, 4, 10, 1, 4))
    cases = [
        ("P1", gt),
        ("P2", _volume((4, 10, 4, 8, 1, 4))),
        ("P3", _volume((4, 10, 4, 10, 1, 4), (0, 2, 0, 2, 0, 1))),
        ("P4", torch.zeros_like(gt)),
    ]

    def step(engine, batch):  # a decollated evaluator output, as after MONAI's post-processing
        name, pred = batch
        engine.state.batch = [{"patient": name, "slices": torch.arange(1, 7)}]
        return [{"pred": pred, "label": gt, "image": torch.rand(3, 16, 16, 6)}]

    engine = Engine(step)
    report = SegmentationReport(tmp_path, prefix="eval", figure_cases=2, spacing=(0.5, 0.5, 2.0))
    report.attach(engine)
    engine.run(cases, max_epochs=1)
    rows = list(csv.DictReader(open(tmp_path / "eval.csv")))
    assert [r["name"] for r in rows] == ["P1", "P2", "P3", "P4"]
    assert float(rows[0]["dice_volume"]) == 1.0 and float(rows[2]["dice_volume_lcc"]) == 1.0
    assert float(rows[2]["dice_volume"]) < 1.0
    assert float(rows[0]["hd95_mm"]) == 0.0 and float(rows[1]["hd95_mm"]) == pytest.approx(1.0)  # 2 columns of 0.5
    assert rows[3]["surface"] == "missed" and math.isnan(float(rows[3]["hd95_mm"]))
    assert [r["surface"] for r in rows[:3]] == ["measured"] * 3
    md = (tmp_path / "eval.md").read_text()
    assert "4 volumes (24 slices)" in md and "| Dice per volume, largest 3D component kept |" in md
    assert "| HD95 per volume (mm) |" in md and "| ASSD per volume (mm) |" in md
    hd95_line = next(line for line in md.splitlines() if line.startswith("| HD95 per volume (mm) |"))
    assert hd95_line.endswith("| 3 |")  # the missed volume is left out of the mean, and counted:
    assert "measured in 3 volumes; 1 missed (empty prediction), 0 spurious" in md
    assert (tmp_path / "eval_slices.png").stat().st_size > 1000
    assert len(report.panels) == 2 and report.panels[0]["title"].startswith("P1 slice 2")
    np.testing.assert_array_equal(report.panels[0]["label"], gt[0, ..., 1].numpy() > 0.5)


def test_bad_input():
    with pytest.raises(ValueError, match=r"expected pred and label of equal shape \(1, H, W, D\)"):
        binary_volume_scores(torch.zeros(1, 4, 4, 2), torch.zeros(1, 4, 4, 3))
    with pytest.raises(ValueError, match="expected at least one evaluated volume"):
        SegmentationReport("unused").write()
    with pytest.raises(ValueError, match=r"spacing: expected 3 positive sizes in mm \(H, W, slice\) or None"):
        SegmentationReport("unused", spacing=(1.0, 1.0))


def test_default_report_says_pixels(tmp_path):
    gt = _volume((4, 10, 4, 10, 1, 4))

    def step(engine, pred):
        engine.state.batch = [{"patient": "P1"}]
        return [{"pred": pred, "label": gt, "image": torch.rand(3, 16, 16, 6)}]

    engine = Engine(step)
    SegmentationReport(tmp_path, figure_cases=0).attach(engine)
    engine.run([_volume((4, 10, 6, 10, 1, 4))], max_epochs=1)
    row = next(csv.DictReader(open(tmp_path / "evaluation.csv")))
    assert float(row["hd95_px"]) == pytest.approx(2.0) and "hd95_mm" not in row
    assert (
        "| HD95 per volume (pixels: 1 per pixel along H and W, 1 per slice) |"
        in (tmp_path / "evaluation.md").read_text()
    )
