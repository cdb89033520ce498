"""The instance memory: the vertebrae already segmented, in traversal order, as one label map; and the traversal order
of a data set's label values."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

__all__ = ["traversal_order", "InstanceMemory"]


def traversal_order(values: Sequence[int], order: Sequence[int] | None = None) -> list[int]:
    """The label values ``values`` (non-zero) in traversal order: ascending, or as listed in ``order`` (e.g.
    :data:`common.data.VERSE_ORDER`, T13 between T12 and L1). Raises ``ValueError`` naming values ``order`` lacks
    (a label is never dropped silently)."""
    values = sorted({int(v) for v in values if int(v) != 0})
    if order is None:
        return values
    rank = {int(v): i for i, v in enumerate(order)}
    unknown = [v for v in values if v not in rank]
    if unknown:
        raise ValueError(f"label values: expected values listed in the traversal order {list(order)}, found {unknown}")
    return sorted(values, key=rank.__getitem__)


class InstanceMemory:
    """The instances segmented so far in a volume of shape ``shape``: a label map (0 = none) whose values are given in
    order, 1 for the first instance written, 2 for the next, ...

    ``labels`` ``(*S)`` int16 tensor; :meth:`patch` gives the binary memory channel of a patch.
    """

    def __init__(self, shape: Sequence[int], device: torch.device | str = "cpu") -> None:
        self.labels = torch.zeros(tuple(shape), dtype=torch.int16, device=device)
        self.count = 0

    def patch(self, slices: tuple[slice, ...]) -> torch.Tensor:
        """The memory channel of the patch ``slices``: 1 where an instance has been written, else 0 (float32)."""
        return (self.labels[slices] > 0).float()

    def add(self, slices: tuple[slice, ...], mask: torch.Tensor) -> int:
        """Write ``mask`` (bool, the patch's shape) as the next instance, on voxels not already taken; returns its
        label value."""
        self.count += 1
        region = self.labels[slices]
        region[mask & (region == 0)] = self.count
        return self.count

    def numpy(self) -> np.ndarray:
        return self.labels.cpu().numpy()
