"""VertebraReport on a real evaluator run: files written, values those of instance_scores; the summary over volumes
(per-vertebra scores averaged within each volume first) with the sample sd and scipy's bootstrap interval."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest
import torch
from ignite.engine import Engine
from scipy import stats

from common.apps.iterative_fcn import IterativeInferer, Traversal
from common.handlers import VertebraReport
from common.metrics import instance_scores
from common.utils.stats import N_RESAMPLES


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
    summary = {r["score"]: r for r in csv.DictReader(open(tmp_path / "evaluation_summary.csv"))}
    assert float(summary["completeness_accuracy"]["mean"]) == 1.0 and summary["completeness_accuracy"]["n"] == "1"
    assert "| completeness_scored | 2 |" in (tmp_path / "evaluation.md").read_text()


def _spine(blocks: list[tuple[int, slice]], shape: tuple[int, ...] = (12, 12, 60)) -> torch.Tensor:
    """An instance map ``(1, *shape)``: value ``v`` on a 6x6 block over the slice range of each ``(v, range)``."""
    out = torch.zeros(1, *shape)
    for value, z in blocks:
        out[0, 3:9, 3:9, z] = value
    return out


def test_summary_is_over_volumes_with_sample_sd_and_interval(tmp_path):
    """Three volumes with 1, 3 and 2 vertebrae: each volume's Dice is the mean over its own vertebrae, then the
    volumes are averaged (the pooled mean over the 6 vertebrae differs); sample sd; scipy's interval on the same
    draws; identification rate and false positives per volume."""
    volumes = {
        "v1": (_spine([(8, slice(10, 18))]), _spine([(1, slice(11, 19))])),  # one vertebra, shifted by a slice
        "v2": (  # three vertebrae, one found, two missed
            _spine([(8, slice(5, 13)), (9, slice(20, 28)), (10, slice(35, 43))]),
            _spine([(1, slice(5, 13))]),
        ),
        "v3": (  # two vertebrae found, one false-positive instance
            _spine([(8, slice(5, 13)), (9, slice(20, 28))]),
            _spine([(1, slice(5, 13)), (2, slice(20, 27)), (3, slice(45, 50))]),
        ),
    }

    def step(engine, batch):
        label, pred = volumes[batch["case"][0]]
        return {"pred": pred, "label": label}

    engine = Engine(step)
    report = VertebraReport(tmp_path)
    report.attach(engine)
    engine.run([{"case": [c]} for c in volumes], max_epochs=1)

    per_volume = [instance_scores(pred[0], label[0], (1.0, 1.0, 1.0)) for label, pred in volumes.values()]
    dice = np.array([np.mean([r["dice"] for r in rows]) for rows, _ in per_volume])
    pooled = np.mean([r["dice"] for rows, _ in per_volume for r in rows])
    assert abs(dice.mean() - pooled) > 0.05  # the two averages differ on this table
    summary = {r["score"]: r for r in csv.DictReader(open(tmp_path / "evaluation_summary.csv"))}
    assert list(summary) == ["mean_dice", "mean_assd", "identification_rate", "false_positives", "missed"]
    expected = {
        "mean_dice": dice,
        "identification_rate": np.array([1.0, 1 / 3, 1.0]),
        "false_positives": np.array([0.0, 0.0, 1.0]),
        "missed": np.array([0.0, 2.0, 0.0]),
    }
    for key, values in expected.items():
        mean = values.sum() / len(values)
        sd = math.sqrt(((values - mean) ** 2).sum() / (len(values) - 1))
        ci = stats.bootstrap(
            (values,), np.mean, n_resamples=N_RESAMPLES, method="percentile", rng=np.random.default_rng(0)
        ).confidence_interval
        row = summary[key]
        assert float(row["mean"]) == pytest.approx(mean, abs=1e-12)
        assert float(row["sd"]) == pytest.approx(sd, abs=1e-12) and sd != pytest.approx(values.std(), abs=1e-6)
        assert (float(row["ci_low"]), float(row["ci_high"])) == pytest.approx((ci.low, ci.high), abs=1e-12)
        assert (row["n"], row["dropped"]) == ("3", "0")
    assert float(summary["mean_assd"]["mean"]) == pytest.approx(np.mean([s["mean_assd"] for _, s in per_volume]))
    md = (tmp_path / "evaluation.md").read_text()
    ci = stats.bootstrap(
        (dice,), np.mean, n_resamples=N_RESAMPLES, method="percentile", rng=np.random.default_rng(0)
    ).confidence_interval
    cell = f"{dice.mean():.3f} +- {dice.std(ddof=1):.3f} [{ci.low:.3f}, {ci.high:.3f}]"
    assert f"| Dice: mean over the volume's ground-truth vertebrae (`mean_dice`) | {cell} | 3 |" in md
    assert "The unit is the volume" in md
    assert "| vertebrae | 6 |" in md and "| identified | 4 |" in md and "| false_positives | 1 |" in md
