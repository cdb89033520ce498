"""LesionEvaluation and its reports: every (model, inference) setting scored per subject with lesion_scores, the
summary's micro-DSC pooled over subjects, CSV / markdown / figure written."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from monai.inferers import SimpleInferer

from common.apps.zoom import CentreCropInferer, LesionEvaluation
from common.metrics import lesion_scores, micro_dice


class Oracle(torch.nn.Module):
    """Logits from the image itself: lesion where the image is above 0.5."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - 0.5) * 20


def _items():
    rng = np.random.default_rng(0)
    items = []
    for k in range(3):
        label = np.zeros((1, 12, 10, 8), np.float32)
        label[0, 3 + k : 7, 2:6, 2:5] = 1
        image = label + 0.3 * rng.random(label.shape).astype(np.float32)
        image[0, 0, 0, 0] = 1.0  # a corner false positive, outside the centre crop
        affine = np.diag([2.0, 1.5, 1.0, 1.0])
        items.append(
            {
                "image": MetaTensor(torch.as_tensor(image), affine=torch.as_tensor(affine)),
                "label": label,
                "case": f"c{k}",
            }
        )
    return items


def test_rows_summary_and_files(tmp_path):
    items = _items()
    ev = LesionEvaluation(
        items,
        {"oracle": Oracle()},
        {"whole": SimpleInferer(), "centre": CentreCropInferer((6, 6, 4))},
        tmp_path,
    )
    rows = ev.run()
    assert [(r["inference"], r["case"]) for r in rows] == [(i, f"c{k}") for i in ("whole", "centre") for k in range(3)]
    for r, item in zip(rows[:3], items):
        pred = (item["image"][0].numpy() > 0.5).astype(np.float32)
        want = lesion_scores(pred, item["label"][0], (2.0, 1.5, 1.0))
        assert {k: r[k] for k in want if k != "hd_mm"} == pytest.approx({k: v for k, v in want.items() if k != "hd_mm"})
        assert r["fp"] == 1 and r["lesion_fp"] == 1  # the corner voxel, a lesion of its own
    assert all(r["fp"] == 0 for r in rows[3:])  # the centre crop never sees the corner
    with open(tmp_path / "lesion_summary.csv") as f:
        summary = list(csv.DictReader(f))
    assert [s["inference"] for s in summary] == ["whole", "centre"]
    assert float(summary[0]["micro_dice"]) == pytest.approx(micro_dice(rows[:3]))
    report = (tmp_path / "lesion_report.md").read_text()
    assert "micro-DSC" in report and "lesion-wise F1" in report and "| oracle | centre | 3 |" in report
    assert (tmp_path / "lesion_dice.png").stat().st_size > 0 and (tmp_path / "lesion_scores.csv").is_file()
