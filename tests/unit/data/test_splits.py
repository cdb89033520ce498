"""common.data.splits: patient-level k-fold and train/val/test splits, and the splits of a datalist with folds."""

from __future__ import annotations

import pytest
from monai.data import partition_dataset

from common.data import kfold_split, split_by_fold, train_val_test_split

IDS = [f"p{i:03d}" for i in range(23)]


def test_folds_partition_patients_and_are_seeded():
    groups = [["NOR", "DCM", "HCM"][i % 3] for i in range(23)]
    vals = []
    for fold in range(5):
        train, val = kfold_split(IDS, 5, fold, seed=1, groups=groups)
        assert not set(train) & set(val) and set(train) | set(val) == set(IDS)
        assert len(val) in (4, 5)  # sizes differ by at most one (MONAI's partition_dataset_classes gives 3 to 6)
        assert {g for i, g in zip(IDS, groups) if i in val} == {"NOR", "DCM", "HCM"}  # stratified
        vals += val
    assert sorted(vals) == sorted(IDS)  # each patient validates exactly once
    assert kfold_split(IDS, 5, 2, seed=1) == kfold_split(IDS, 5, 2, seed=1)
    assert kfold_split(IDS, 5, 2, seed=1) != kfold_split(IDS, 5, 2, seed=2)


def test_groups_smaller_than_the_fold_count_still_split():
    groups = ["NOR", "MINF", "DCM", "HCM", "RV", "NOR", "MINF"]  # one or two patients per group, 5 folds
    vals = [kfold_split(IDS[:7], 5, fold, seed=0, groups=groups)[1] for fold in range(5)]
    assert sorted(len(v) for v in vals) == [1, 1, 1, 2, 2] and sorted(sum(vals, [])) == IDS[:7]
    assert all(len({groups[IDS.index(i)] for i in v}) == len(v) for v in vals)  # no fold holds a group twice


def test_split_is_the_library_partition_and_ignores_input_order():
    folds = partition_dataset(sorted(IDS), num_partitions=5, shuffle=True, seed=3)
    for fold in range(5):
        assert kfold_split(IDS, 5, fold, seed=3)[1] == sorted(folds[fold])
        assert sorted(kfold_split(IDS[::-1], 5, fold, seed=3)[1]) == sorted(folds[fold])


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"num_folds": 1}, "num_folds: expected >= 2"),
        ({"fold": 5}, r"fold: expected an index in \[0, 5\)"),
        ({"fold": -1}, r"fold: expected an index in \[0, 5\), found -1"),
        ({"groups": ["a"]}, "expected one group per id"),
        ({"num_folds": 7}, "expected at least num_folds=7 patients, found 6"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        kfold_split([f"p{i}" for i in range(6)], **{"num_folds": 5, "fold": 0, **kwargs})


def test_duplicate_ids_rejected():
    with pytest.raises(ValueError, match="expected unique patient ids, found 1 duplicates"):
        kfold_split(["a", "a", "b", "c", "d", "e"], 5, 0)


# ------------------------------------------------------------------------------------------------ train/val/test


@pytest.mark.parametrize("n,num_folds", [(23, 5), (6, 5), (6, 3), (110, 5)])
def test_three_way_split_is_disjoint_covers_every_patient_and_tests_each_once(n, num_folds):
    ids = IDS[:n] if n <= len(IDS) else [f"TCGA_XX_{i:04d}" for i in range(n)]
    tested = []
    for fold in range(num_folds):
        train, val, test = train_val_test_split(ids, num_folds, fold, seed=0, val_fraction=0.2)
        assert train and val and test
        assert not set(train) & set(val) and not set(train) & set(test) and not set(val) & set(test)
        assert sorted(train + val + test) == sorted(ids)
        assert test == kfold_split(ids, num_folds, fold, seed=0)[1]  # test is the held-out fold
        assert len(val) == max(1, round(0.2 * (n - len(test))))
        tested += test
    assert sorted(tested) == sorted(ids)


def test_three_way_split_is_seeded():
    split = train_val_test_split(IDS, 5, 1, seed=4)
    assert split == train_val_test_split(IDS, 5, 1, seed=4)
    assert [sorted(s) for s in train_val_test_split(IDS[::-1], 5, 1, seed=4)] == [sorted(s) for s in split]
    assert train_val_test_split(IDS, 5, 1, seed=4) != train_val_test_split(IDS, 5, 1, seed=5)
    _, val_a, test_a = train_val_test_split(IDS, 5, 1, seed=4, val_fraction=0.1)
    _, val_b, test_b = train_val_test_split(IDS, 5, 1, seed=4, val_fraction=0.3)
    assert test_a == test_b and len(val_a) == 2 and len(val_b) == 5  # the test fold does not depend on val_fraction


@pytest.mark.parametrize(
    "ids,kwargs,match",
    [
        (IDS, {"val_fraction": 0.0}, r"val_fraction: expected a fraction in \(0, 1\), found 0.0"),
        (IDS, {"val_fraction": 1.0}, r"val_fraction: expected a fraction in \(0, 1\), found 1.0"),
        (IDS[:3], {"num_folds": 2}, "expected at least 2 patients outside test fold 0 of 2 .* found 1 of 3"),
        (IDS[:2], {"num_folds": 2}, "expected at least 2 patients outside test fold 0 of 2"),
        (IDS[:4], {"num_folds": 5}, "expected at least num_folds=5 patients, found 4"),
        (["a", "a", "b"], {"num_folds": 2}, "expected unique patient ids"),
    ],
)
def test_three_way_split_bad_arguments(ids, kwargs, match):
    with pytest.raises(ValueError, match=match):
        train_val_test_split(ids, **kwargs)


ITEMS = [{"case": f"c{i}", "fold": i % 5, "image": [f"c{i}.nii"]} for i in range(12)]


def test_datalist_splits_by_fold_are_disjoint_and_cover_every_item():
    test = split_by_fold(ITEMS, "test", test_fold=2, val_fold=4)
    val = split_by_fold(ITEMS, "val", test_fold=2, val_fold=4)
    train = split_by_fold(ITEMS, "train", test_fold=2, val_fold=4)
    assert [d["case"] for d in test] == ["c2", "c7"] and [d["case"] for d in val] == ["c4", "c9"]
    assert [d["case"] for d in train] == [f"c{i}" for i in range(12) if i % 5 not in (2, 4)]  # order kept
    assert split_by_fold(ITEMS, "all") == ITEMS
    test[0]["case"] = "changed"
    assert ITEMS[2]["case"] == "c2"  # copies


@pytest.mark.parametrize(
    "items,kwargs,match",
    [
        (
            ITEMS,
            {"split": "validation"},
            r"split: expected one of \('train', 'val', 'test', 'all'\), found 'validation'",
        ),
        (ITEMS, {"split": "test", "test_fold": 1, "val_fold": 1}, "test_fold, val_fold: expected different folds"),
        ([{"case": "a", "fold": 0}, {"case": "b"}], {"split": "train"}, r"expected a 'fold' in every item.* \['b'\]"),
        (
            ITEMS,
            {"split": "test", "test_fold": 7},
            r"split 'test': expected at least one item .* folds \[0, 1, 2, 3, 4\]",
        ),
    ],
)
def test_datalist_split_errors(items, kwargs, match):
    with pytest.raises(ValueError, match=match):
        split_by_fold(items, **kwargs)


def test_fold_of_is_the_validation_fold_of_each_id():
    from common.data import fold_of, kfold_split

    ids = [f"p{i}" for i in range(11)]
    folds = fold_of(ids, 4, seed=3)
    assert sorted(folds) == sorted(ids)
    for k in range(4):
        assert sorted(i for i, f in folds.items() if f == k) == sorted(kfold_split(ids, 4, k, 3)[1])
