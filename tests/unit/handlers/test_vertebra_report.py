"""VertebraReport on a real evaluator run: files written, values those of instance_scores."""

from __future__ import annotations

import csv

import torch
from ignite.engine import Engine

from common.apps.iterative_fcn import IterativeInferer, Traversal
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


def test_report_scores_the_completeness_decisions(tmp_path):
    """Two accepted instances: vertebra 8 inside its patch, said complete (right); vertebra 9 half outside its patch,
    said incomplete (right) and written when the traversal returned to it ("returned to")."""
    label = torch.zeros(1, 1, 20, 20, 48)
    label[0, 0, 6:13, 7:14, 30:38] = 8
    label[0, 0, 6:13, 7:14, 10:18] = 9
    pred = torch.zeros_like(label)
    pred[label == 8], pred[label == 9] = 1, 2
    inferer = IterativeInferer((16, 16, 16))
    instances = [
        {"label": 1, "origin": [2, 2, 26], "complete": True, "accepted": "complete"},
        {"label": 2, "origin": [2, 2, 14], "complete": False, "accepted": "returned to"},
    ]

    def step(engine, batch):
        inferer.history.append(Traversal(pred[0, 0], 5, "no vertebra left", "", instances, patch_size=(16, 16, 16)))
        return {"pred": pred[0], "label": label[0]}

    engine = Engine(step)
    report = VertebraReport(tmp_path, inferer=inferer)
    report.attach(engine)
    engine.run([{"case": ["c1"]}], max_epochs=1)
    rows = list(csv.DictReader(open(tmp_path / "evaluation_instances.csv")))
    assert [(r["vertebra"], r["accepted"], r["complete_true"], r["correct"]) for r in rows] == [
        ("8", "complete", "True", "True"),
        ("9", "returned to", "False", "True"),
    ]
    volumes = list(csv.DictReader(open(tmp_path / "evaluation_volumes.csv")))
    assert float(volumes[0]["completeness_accuracy"]) == 1.0 and int(volumes[0]["accepted_incomplete"]) == 1
    assert "| completeness_accuracy | 1.0000 |" in (tmp_path / "evaluation.md").read_text()
