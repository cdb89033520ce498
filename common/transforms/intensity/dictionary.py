"""Intensity transforms (dictionary twins)."""

from __future__ import annotations

from collections.abc import Hashable, Mapping

from monai.config import KeysCollection, NdarrayOrTensor
from monai.transforms import MapTransform

from common.transforms.intensity.array import HounsfieldUnits, ZScoreForeground, ZScoreSlices

__all__ = ["ZScoreSlicesd", "ZScoreForegroundd", "HounsfieldUnitsd"]


class ZScoreSlicesd(MapTransform):
    """Dictionary twin of :class:`ZScoreSlices`."""

    backend = ZScoreSlices.backend

    def __init__(self, keys: KeysCollection, eps: float = 1e-6, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.op = ZScoreSlices(eps)

    def __call__(self, data: Mapping[Hashable, NdarrayOrTensor]) -> dict[Hashable, NdarrayOrTensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.op(d[key])
        return d


class ZScoreForegroundd(MapTransform):
    """Dictionary twin of :class:`ZScoreForeground`."""

    backend = ZScoreForeground.backend

    def __init__(
        self,
        keys: KeysCollection,
        background: float = 0.0,
        threshold: float = 0.0,
        eps: float = 1e-6,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.op = ZScoreForeground(background, threshold, eps)

    def __call__(self, data: Mapping[Hashable, NdarrayOrTensor]) -> dict[Hashable, NdarrayOrTensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.op(d[key])
        return d


class HounsfieldUnitsd(MapTransform):
    """Dictionary twin of :class:`HounsfieldUnits` (the item's ``case`` names it in the log)."""

    backend = HounsfieldUnits.backend

    def __init__(self, keys: KeysCollection, offset: str | int = "auto", allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.op = HounsfieldUnits(offset)

    def __call__(self, data: Mapping[Hashable, NdarrayOrTensor]) -> dict[Hashable, NdarrayOrTensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.op(d[key], name=f"{d.get('case', '')} {key}".strip())
        return d
