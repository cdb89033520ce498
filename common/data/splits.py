"""Seeded patient-level splits (a patient's slices never fall in two splits): k-fold, train/val/test, and the
train/val/test items of a datalist whose items carry their fold."""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence

from monai.data import partition_dataset

__all__ = ["kfold_split", "fold_of", "train_val_test_split", "split_by_fold", "SPLITS"]

SPLITS = ("train", "val", "test", "all")


def _check_ids(ids: Sequence[Hashable], num_folds: int, fold: int, fn: str) -> list[Hashable]:
    ids = list(ids)
    if len(set(ids)) != len(ids):
        raise ValueError(f"{fn}: expected unique patient ids, found {len(ids) - len(set(ids))} duplicates")
    if num_folds < 2:
        raise ValueError(f"num_folds: expected >= 2, found {num_folds}")
    if not 0 <= fold < num_folds:
        raise ValueError(f"fold: expected an index in [0, {num_folds}), found {fold}")
    if len(ids) < num_folds:
        raise ValueError(f"{fn}: expected at least num_folds={num_folds} patients, found {len(ids)}")
    return ids


def _folds(ids: list[Hashable], num_folds: int, seed: int, groups: Sequence[Hashable] | None) -> list[list[Hashable]]:
    """All ``num_folds`` folds of ``ids`` (checked by the caller), stratified by ``groups`` when given."""
    if groups is None:
        groups = [0] * len(ids)
    if len(groups) != len(ids):
        raise ValueError(f"groups: expected one group per id ({len(ids)}), found {len(groups)}")
    # MONAI's partition_dataset_classes is not used for the stratified case: it deals every group from fold 0 on, so
    # fold sizes differ by up to the number of groups (23 patients in 3 groups -> folds of 6, 6, 5, 3, 3), and it raises
    # when a group has fewer patients than folds. Instead each group is shuffled on its own (seeded), the groups are
    # laid end to end and the whole list is dealt round-robin by partition_dataset: fold k = order[k::num_folds]. Each
    # group then spreads over the folds in proportion and fold sizes differ by at most one. Ids are sorted first, so the
    # split does not depend on the order they were listed in. Without groups this is
    # partition_dataset(sorted ids, num_partitions=num_folds, shuffle=True, seed=seed).
    order: list[Hashable] = []
    for group in sorted(set(groups), key=str):
        members = sorted((i for i, g in zip(ids, groups) if g == group), key=str)
        order += partition_dataset(members, ratios=[1], shuffle=True, seed=seed)[0]  # the seeded shuffle alone
    return partition_dataset(order, num_partitions=num_folds, shuffle=False)


def kfold_split(
    ids: Sequence[Hashable],
    num_folds: int = 5,
    fold: int = 0,
    seed: int = 0,
    groups: Sequence[Hashable] | None = None,
) -> tuple[list[Hashable], list[Hashable]]:
    """Split patient ``ids`` into (train, validation) for fold ``fold`` of ``num_folds``.

    Patients are shuffled with ``seed`` and dealt round-robin into folds (MONAI ``partition_dataset``), within each
    group when ``groups`` (one label per id, e.g. the ACDC pathology) is given, so every fold holds each group in
    proportion and fold sizes differ by at most one. Equal arguments give equal splits whatever the order of ``ids``;
    the union of the validation sets over all folds is ``ids``, each id exactly once. Both lists keep the order of
    ``ids``. Raises ``ValueError`` for duplicate ids, ``num_folds < 2``, ``fold`` outside ``[0, num_folds)``, fewer
    ids than folds, or ``groups`` of the wrong length.
    """
    ids = _check_ids(ids, num_folds, fold, "kfold_split")
    val = set(_folds(ids, num_folds, seed, groups)[fold])
    return [i for i in ids if i not in val], [i for i in ids if i in val]


def fold_of(ids: Sequence[Hashable], num_folds: int = 5, seed: int = 0) -> dict[Hashable, int]:
    """The fold of every id under :func:`kfold_split` (``{id: k}``: id is in the validation set of fold ``k``), as the
    datalists with folds (:func:`~common.data.brats_datalist`, :func:`~common.data.csi_datalist`) record it."""
    return {i: k for k in range(num_folds) for i in kfold_split(ids, num_folds, k, seed)[1]}


def train_val_test_split(
    ids: Sequence[Hashable],
    num_folds: int = 5,
    fold: int = 0,
    seed: int = 0,
    val_fraction: float = 0.2,
) -> tuple[list[Hashable], list[Hashable], list[Hashable]]:
    """Split patient ``ids`` three ways: (train, val, test), disjoint and together ``ids``.

    ``test`` is fold ``fold`` of the seeded ``num_folds``-fold split of :func:`kfold_split` (held out: over all folds
    every patient is tested exactly once). The other patients are shuffled with ``seed`` and split
    (MONAI ``partition_dataset`` with exact sizes) into ``val``, ``max(1, round(val_fraction * n))`` of the ``n``
    patients (model selection: best epoch), and ``train``, the rest (at least one). All three lists keep the order of
    ``ids``. Raises ``ValueError`` for the arguments :func:`kfold_split` rejects, ``val_fraction`` outside ``(0, 1)``,
    or fewer than two patients outside the test fold.
    """
    if not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction: expected a fraction in (0, 1), found {val_fraction}")
    ids = _check_ids(ids, num_folds, fold, "train_val_test_split")
    test = set(_folds(ids, num_folds, seed, None)[fold])
    rest = sorted((i for i in ids if i not in test), key=str)
    if len(rest) < 2:
        raise ValueError(
            f"train_val_test_split: expected at least 2 patients outside test fold {fold} of {num_folds} (one to "
            f"train, one to validate), found {len(rest)} of {len(ids)}; use fewer folds or more patients"
        )
    n_val = min(max(1, round(val_fraction * len(rest))), len(rest) - 1)
    train_part, val_part = partition_dataset(rest, ratios=[len(rest) - n_val, n_val], shuffle=True, seed=seed)
    train, val = set(train_part), set(val_part)
    return [i for i in ids if i in train], [i for i in ids if i in val], [i for i in ids if i in test]


def split_by_fold(
    items: Sequence[Mapping], split: str, test_fold: int = 0, val_fold: int = 1, fold_key: str = "fold"
) -> list[dict]:
    """The items of one split of a datalist whose items carry their fold (e.g. :func:`~common.data.brats_datalist`,
    folds by patient): ``"test"`` = fold ``test_fold`` (held out), ``"val"`` = fold ``val_fold`` (model selection),
    ``"train"`` = every other fold, ``"all"`` = every item. Items keep their order and are copied (shallow).

    Raises ``ValueError`` for an unknown ``split``, equal ``test_fold`` and ``val_fold``, items without ``fold_key``
    (named by their ``case`` or index), or a split left empty (naming the folds present).
    """
    if split not in SPLITS:
        raise ValueError(f"split: expected one of {SPLITS}, found {split!r}")
    if test_fold == val_fold:
        raise ValueError(
            f"test_fold, val_fold: expected different folds (the test cases must not choose the weights), found "
            f"{test_fold} for both"
        )
    unlabelled = [str(d.get("case", i)) for i, d in enumerate(items) if fold_key not in d]
    if unlabelled:
        raise ValueError(
            f"items: expected a '{fold_key}' in every item (a datalist with folds, such as brats_datalist's "
            f"'training' list), found {len(unlabelled)} without, e.g. {unlabelled[:3]}"
        )
    chosen = {
        "test": lambda k: k == test_fold,
        "val": lambda k: k == val_fold,
        "train": lambda k: k not in (test_fold, val_fold),
        "all": lambda k: True,
    }[split]
    out = [dict(d) for d in items if chosen(d[fold_key])]
    if not out:
        present = sorted({d[fold_key] for d in items})
        raise ValueError(
            f"split {split!r}: expected at least one item (test_fold={test_fold}, val_fold={val_fold}), found none; "
            f"the items hold folds {present}"
        )
    return out
