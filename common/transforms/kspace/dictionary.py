"""Dictionary twin of the k-space undersampling transform."""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from pathlib import Path

from monai.config import KeysCollection, NdarrayOrTensor
from monai.transforms import MapTransform

from common.transforms.kspace.array import KSpaceUndersample
from common.transforms.kspace.masks import MaskFactory

__all__ = ["KSpaceUndersampled"]


class KSpaceUndersampled(MapTransform):
    """Dictionary twin of :class:`KSpaceUndersample`: same arguments after ``keys``.

    With a mask factory (e.g. ``line_pattern("learned", pattern_file=...)``) each key's mask is built from that
    image's width when the transform runs, so a config naming a pattern file not written yet still parses.
    """

    backend = KSpaceUndersample.backend

    def __init__(
        self,
        keys: KeysCollection,
        mask: NdarrayOrTensor | MaskFactory | str | Path,
        pe_dim: int = -1,
        point: bool = False,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.op = KSpaceUndersample(mask, pe_dim, point)

    def __call__(self, data: Mapping[Hashable, NdarrayOrTensor]) -> dict[Hashable, NdarrayOrTensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.op(d[key])
        return d
