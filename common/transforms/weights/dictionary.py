"""Dictionary twin of the boundary weights."""

from __future__ import annotations

from collections.abc import Hashable, Mapping

from monai.config import KeysCollection, NdarrayOrTensor
from monai.transforms import MapTransform

from .array import BoundaryWeight

__all__ = ["BoundaryWeightd"]


class BoundaryWeightd(MapTransform):
    """Dictionary twin of :class:`BoundaryWeight`: the weights of ``keys`` (labels) are stored under ``weight_keys``
    (one per key)."""

    backend = BoundaryWeight.backend

    def __init__(
        self,
        keys: KeysCollection,
        weight_keys: KeysCollection = "weight",
        scale: float = 8.0,
        denominator: float = 36.0,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.weight_keys = [weight_keys] if isinstance(weight_keys, str) else list(weight_keys)
        if len(self.weight_keys) != len(self.keys):
            raise ValueError(f"weight_keys: expected one per key ({len(self.keys)}), found {self.weight_keys}")
        self.op = BoundaryWeight(scale, denominator)

    def __call__(self, data: Mapping[Hashable, NdarrayOrTensor]) -> dict[Hashable, NdarrayOrTensor]:
        d = dict(data)
        for key, out in self.key_iterator(d, self.weight_keys):
            d[out] = self.op(d[key])
        return d
