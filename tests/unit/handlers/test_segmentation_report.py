"""common.metrics.segmentation and common.handlers.segmentation_report: per-volume and per-slice Dice,
largest-component post-processing, the written report."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest
import torch
from ignite.engine import Engine

from common.handlers import SegmentationReport
from common.metrics import binary_volume_scores, summarise


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
    none = binary_volume_scores(torch.zeros_like(gt), torch.zeros_like(gt))
    assert none["dice_volume"] == 1.0 and math.isnan(none["dice_slice_tumour"]) and none["dice_slice_all"] == 1.0


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


def test_handler_writes_csv_markdown_and_figure(tmp_path):
    gt = _volume((4, 10, 4, 10, 1, 4))
    cases = [
        ("P1", gt),
        ("P2", _volume((4, 10, 4, 8, 1, 4))),
        ("P3", _volume((4, 10, 4, 10, 1, 4), (0, 2, 0, 2, 0, 1))),
    ]

    def step(engine, batch):  # a decollated evaluator output, as after MONAI's post-processing
        name, pred = batch
        engine.state.batch = [{"patient": name, "slices": torch.arange(1, 7)}]
        return [{"pred": pred, "label": gt, "image": torch.rand(3, 16, 16, 6)}]

    engine = Engine(step)
    report = SegmentationReport(tmp_path, prefix="eval", figure_cases=2)
    report.attach(engine)
    engine.run(cases, max_epochs=1)
    rows = list(csv.DictReader(open(tmp_path / "eval.csv")))
    assert [r["name"] for r in rows] == ["P1", "P2", "P3"]
    assert float(rows[0]["dice_volume"]) == 1.0 and float(rows[2]["dice_volume_lcc"]) == 1.0
    assert float(rows[2]["dice_volume"]) < 1.0
    md = (tmp_path / "eval.md").read_text()
    assert "3 volumes (18 slices)" in md and "| Dice per volume, largest 3D component kept |" in md
    assert (tmp_path / "eval_slices.png").stat().st_size > 1000
    assert len(report.panels) == 2 and report.panels[0]["title"].startswith("P1 slice 2")
    np.testing.assert_array_equal(report.panels[0]["label"], gt[0, ..., 1].numpy() > 0.5)


def test_bad_input():
    with pytest.raises(ValueError, match=r"expected pred and label of equal shape \(1, H, W, D\)"):
        binary_volume_scores(torch.zeros(1, 4, 4, 2), torch.zeros(1, 4, 4, 3))
    with pytest.raises(ValueError, match="expected at least one evaluated volume"):
        SegmentationReport("unused").write()
