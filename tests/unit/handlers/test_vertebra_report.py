"""VertebraReport on a real evaluator run: files written, values those of instance_scores."""

from __future__ import annotations

import csv

import torch
from ignite.engine import Engine

from common.apps.iterative_fcn import IterativeInferer
from common.handlers import VertebraReport
from common.metrics import instance_scores


def test_report_files_and_values(tmp_path):
    label = torch.zeros(1, 1, 20, 20, 48)
    label[0, 0, 6:13, 7:14, 30:38] = 8
    label[0, 0, 6:13, 7:14, 10:18] = 9
    pred = torch.zeros_like(label)
    pred[0, 0, 6:13, 7:14, 31:38] = 1
    inferer = IterativeInferer((16, 16, 16))

    def step(engine, batch):
        inferer((label / 10), lambda x: torch.cat([x[:, :1] * 0 - 10, x[:, :1] * 0 - 10], 1))
        return {"pred": pred[0], "label": label[0]}

    engine = Engine(step)
    report = VertebraReport(tmp_path, inferer=inferer)
    report.attach(engine)
    engine.run([{"case": ["c1"]}], max_epochs=1)
    rows = list(csv.DictReader(open(tmp_path / "evaluation.csv")))
    expected, summary = instance_scores(pred[0, 0], label[0, 0], (1.0, 1.0, 1.0))
    assert [float(r["dice"]) for r in rows] == [e["dice"] for e in expected]
    volumes = list(csv.DictReader(open(tmp_path / "evaluation_volumes.csv")))
    assert volumes[0]["case"] == "c1" and volumes[0]["end"] == "no vertebra left" and int(volumes[0]["steps"]) > 0
    assert "identification_rate" in (tmp_path / "evaluation.md").read_text()
    assert (tmp_path / "evaluation_dice.png").stat().st_size > 0
