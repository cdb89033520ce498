"""Seeded patient-level k-fold splits (a patient's slices never fall in two splits)."""

from __future__ import annotations

from collections.abc import Hashable, Sequence

import numpy as np

__all__ = ["kfold_split"]


def kfold_split(
    ids: Sequence[Hashable],
    num_folds: int = 5,
    fold: int = 0,
    seed: int = 0,
    groups: Sequence[Hashable] | None = None,
) -> tuple[list[Hashable], list[Hashable]]:
    """Split patient ``ids`` into (train, validation) for fold ``fold`` of ``num_folds``.

    Patients are shuffled with ``seed`` and dealt round-robin into folds, within each group when ``groups`` (one label
    per id, e.g. the ACDC pathology) is given, so every fold holds each group in proportion. Equal arguments give
    equal splits; the union of the validation sets over all folds is ``ids``, each id exactly once.
    """
    ids = list(ids)
    if len(set(ids)) != len(ids):
        raise ValueError(f"kfold_split: expected unique patient ids, found {len(ids) - len(set(ids))} duplicates")
    if num_folds < 2:
        raise ValueError(f"num_folds: expected >= 2, found {num_folds}")
    if not 0 <= fold < num_folds:
        raise ValueError(f"fold: expected an index in [0, {num_folds}), found {fold}")
    if len(ids) < num_folds:
        raise ValueError(f"kfold_split: expected at least num_folds={num_folds} patients, found {len(ids)}")
    if groups is None:
        groups = [0] * len(ids)
    if len(groups) != len(ids):
        raise ValueError(f"groups: expected one group per id ({len(ids)}), found {len(groups)}")
    rng = np.random.default_rng(seed)
    fold_of: dict[Hashable, int] = {}
    dealt = 0  # continue the round-robin across groups so fold sizes differ by at most one
    for group in sorted(set(groups), key=str):
        members = sorted((i for i, g in zip(ids, groups) if g == group), key=str)
        for i in rng.permutation(len(members)):
            fold_of[members[i]] = dealt % num_folds
            dealt += 1
    train = [i for i in ids if fold_of[i] != fold]
    val = [i for i in ids if fold_of[i] == fold]
    return train, val
