"""common.handlers.SliceClassificationSaver: one CSV row per volume and slice with the class probabilities and the
most probable class, written when the run completes; errors for a pred of another shape and for no volume."""

from __future__ import annotations

import csv

import pytest
import torch
from ignite.engine import Engine

from common.handlers import SliceClassificationSaver


def _run(saver: SliceClassificationSaver, batches: list) -> None:
    engine = Engine(lambda e, batch: [{"pred": b.pop("pred")} for b in batch])  # decollated items, as MONAI's
    saver.attach(engine)
    engine.run([batches], max_epochs=1)


def test_rows_per_volume_and_slice(tmp_path):
    probs = [torch.tensor([[0.9, 0.2, 0.5], [0.1, 0.8, 0.5]]), torch.tensor([[0.3], [0.7]])]
    saver = SliceClassificationSaver(tmp_path, ["no_tumour", "tumour"])
    _run(saver, [{"case": "a", "pred": probs[0]}, {"case": "b", "pred": probs[1]}])
    rows = list(csv.DictReader(open(tmp_path / "slice_probabilities.csv")))
    assert list(rows[0]) == ["case", "slice", "p_no_tumour", "p_tumour", "prediction"]
    got = [(r["case"], int(r["slice"]), float(r["p_no_tumour"]), float(r["p_tumour"]), r["prediction"]) for r in rows]
    expected = [("a", 0, 0.9, 0.1), ("a", 1, 0.2, 0.8), ("a", 2, 0.5, 0.5), ("b", 0, 0.3, 0.7)]
    for g, (case, k, p0, p1) in zip(got, expected):
        assert g[:2] == (case, k) and g[2:4] == pytest.approx((p0, p1))
    assert [g[4] for g in got] == ["no_tumour", "tumour", "no_tumour", "tumour"]  # a tie: the first class


def test_errors(tmp_path):
    with pytest.raises(ValueError, match="at least 2 distinct names"):
        SliceClassificationSaver(tmp_path, ["tumour", "tumour"])
    saver = SliceClassificationSaver(tmp_path, ["a", "b"])
    with pytest.raises(ValueError, match=r"v1: expected pred of shape \(2, slices\).*found \(3, 4\)"):
        _run(saver, [{"case": "v1", "pred": torch.zeros(3, 4)}])
    with pytest.raises(ValueError, match="expected at least one classified volume"):
        saver.write()
