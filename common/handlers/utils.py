"""Output transforms for MONAI's metric handlers."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

__all__ = ["class_channel"]


def class_channel(index: int, keys: Sequence[str] = ("pred", "label")) -> Callable[[list[dict]], tuple[list, list]]:
    """An ``output_transform`` for e.g. ``MeanDice``: from a batch of decollated dicts with one-hot ``(K, *S)``
    ``pred`` and ``label``, keep channel ``index`` -> ``([pred (1, *S)], [label (1, *S)])``.

    Use with ``include_background=True`` (the kept channel is the class itself).
    """
    if index < 0:
        raise ValueError(f"index: expected a class channel >= 0, found {index}")

    def select(batch: list[dict]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        return tuple([d[k][index : index + 1] for d in batch] for k in keys)  # type: ignore[return-value]

    return select
