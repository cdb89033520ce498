"""Dictionary twin of the kaggle_3m mask writer."""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from pathlib import Path

from monai.config import KeysCollection, NdarrayOrTensor
from monai.transforms import MapTransform

from common.transforms.io.array import SaveLggMasks

__all__ = ["SaveLggMasksd"]


class SaveLggMasksd(MapTransform):
    """Dictionary twin of :class:`SaveLggMasks`; reads the patient name and slice numbers from ``patient_key`` and
    ``slices_key`` and returns the data unchanged."""

    def __init__(
        self,
        keys: KeysCollection,
        output_dir: str | Path,
        nifti: bool = False,
        patient_key: str = "patient",
        slices_key: str = "slices",
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.op = SaveLggMasks(output_dir, nifti)
        self.patient_key, self.slices_key = patient_key, slices_key

    def __call__(self, data: Mapping[Hashable, NdarrayOrTensor]) -> dict[Hashable, NdarrayOrTensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            self.op(d[key], str(d[self.patient_key]), d[self.slices_key])
        return d
