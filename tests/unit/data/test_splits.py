"""common.data.splits: patient-level k-fold splits."""

from __future__ import annotations

import pytest

from common.data import kfold_split


def test_folds_partition_patients_and_are_seeded():
    ids = [f"p{i:03d}" for i in range(23)]
    groups = [["NOR", "DCM", "HCM"][i % 3] for i in range(23)]
    vals = []
    for fold in range(5):
        train, val = kfold_split(ids, 5, fold, seed=1, groups=groups)
        assert not set(train) & set(val) and set(train) | set(val) == set(ids)
        assert len(val) in (4, 5)
        assert {g for i, g in zip(ids, groups) if i in val} == {"NOR", "DCM", "HCM"}  # stratified
        vals += val
    assert sorted(vals) == sorted(ids)  # each patient validates exactly once
    assert kfold_split(ids, 5, 2, seed=1) == kfold_split(ids, 5, 2, seed=1)
    assert kfold_split(ids, 5, 2, seed=1) != kfold_split(ids, 5, 2, seed=2)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"num_folds": 1}, "num_folds: expected >= 2"),
        ({"fold": 5}, r"fold: expected an index in \[0, 5\)"),
        ({"groups": ["a"]}, "expected one group per id"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        kfold_split([f"p{i}" for i in range(6)], **{"num_folds": 5, "fold": 0, **kwargs})


def test_duplicate_ids_rejected():
    with pytest.raises(ValueError, match="expected unique patient ids"):
        kfold_split(["a", "a", "b", "c", "d", "e"], 5, 0)
