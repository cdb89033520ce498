"""Dictionary twins of the label conversions."""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence

from monai.config import KeysCollection, NdarrayOrTensor
from monai.transforms import MapTransform

from .array import ClassesToRegions, ConvertBratsLabels, MergeLesionMasks

__all__ = ["ConvertBratsLabelsd", "ClassesToRegionsd", "MergeLesionMasksd"]


class ConvertBratsLabelsd(MapTransform):
    """Dictionary twin of :class:`ConvertBratsLabels`."""

    backend = ConvertBratsLabels.backend

    def __init__(
        self, keys: KeysCollection, regions: Sequence[str] = ("WT", "TC", "ET"), allow_missing_keys: bool = False
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.op = ConvertBratsLabels(regions)

    def __call__(self, data: Mapping[Hashable, NdarrayOrTensor]) -> dict[Hashable, NdarrayOrTensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.op(d[key])
        return d


class ClassesToRegionsd(MapTransform):
    """Dictionary twin of :class:`ClassesToRegions`."""

    backend = ClassesToRegions.backend

    def __init__(
        self, keys: KeysCollection, regions: Sequence[Sequence[int]], allow_missing_keys: bool = False
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.op = ClassesToRegions(regions)

    def __call__(self, data: Mapping[Hashable, NdarrayOrTensor]) -> dict[Hashable, NdarrayOrTensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.op(d[key])
        return d


class MergeLesionMasksd(MapTransform):
    """Dictionary twin of :class:`MergeLesionMasks`. ``files_key``: the item key that lists the mask files of ``key``
    (copied before ``LoadImaged`` replaces the list, e.g. by ``CopyItemsd``), so an error names the very file; None:
    the name in the meta data (the first file)."""

    backend = MergeLesionMasks.backend

    def __init__(self, keys: KeysCollection, files_key: str | None = None, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.files_key = files_key
        self.op = MergeLesionMasks()

    def __call__(self, data: Mapping[Hashable, NdarrayOrTensor]) -> dict[Hashable, NdarrayOrTensor]:
        d = dict(data)
        files = d.get(self.files_key) if self.files_key is not None else None
        for key in self.key_iterator(d):
            d[key] = self.op(d[key], [files] if isinstance(files, str) else files)
        return d
