"""Dictionary twin of the k-space undersampling transform."""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path

from monai.config import KeysCollection, NdarrayOrTensor
from monai.transforms import MapTransform, RandomizableTransform

from common.transforms.kspace.array import KSpaceUndersample, RandKSpaceUndersample
from common.transforms.kspace.masks import MaskFactory

__all__ = ["KSpaceUndersampled", "RandKSpaceUndersampled"]


class KSpaceUndersampled(MapTransform):
    """Dictionary twin of :class:`KSpaceUndersample`: same arguments after ``keys``.

    With a mask factory (e.g. ``line_pattern("learned", pattern_file=...)``) each key's mask is built from that
    image's width when the transform runs, so a config naming a pattern file not written yet still parses. Every key
    is acquired under the same ``forward_model`` with the same phase maps (``phase_seed``).
    """

    backend = KSpaceUndersample.backend

    def __init__(
        self,
        keys: KeysCollection,
        mask: NdarrayOrTensor | MaskFactory | str | Path,
        pe_dim: int = -1,
        point: bool = False,
        forward_model: str = "magnitude",
        phase_seed: int = 0,
        max_phase: float = math.pi,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.op = KSpaceUndersample(mask, pe_dim, point, forward_model, phase_seed, max_phase)

    def __call__(self, data: Mapping[Hashable, NdarrayOrTensor]) -> dict[Hashable, NdarrayOrTensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.op(d[key])
        return d


class RandKSpaceUndersampled(RandomizableTransform, MapTransform):
    """Dictionary twin of :class:`RandKSpaceUndersample`: one pattern drawn per call, the same for every key."""

    backend = RandKSpaceUndersample.backend

    def __init__(
        self,
        keys: KeysCollection,
        accelerations: Sequence[float] = (4, 8, 16),
        center_fractions: Mapping[float, float] | None = None,
        pe_dim: int = -1,
        prob: float = 1.0,
        allow_missing_keys: bool = False,
    ) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        RandomizableTransform.__init__(self, prob)
        self.op = RandKSpaceUndersample(accelerations, center_fractions, pe_dim, prob=1.0)

    def set_random_state(self, seed: int | None = None, state=None) -> RandKSpaceUndersampled:
        super().set_random_state(seed, state)
        self.op.set_random_state(seed, state)
        return self

    def __call__(self, data: Mapping[Hashable, NdarrayOrTensor]) -> dict[Hashable, NdarrayOrTensor]:
        d = dict(data)
        self.randomize(None)
        if not self._do_transform:
            return d
        self.op.randomize()
        for key in self.key_iterator(d):
            d[key] = self.op(d[key], randomize=False)
        return d
