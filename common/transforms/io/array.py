"""Array transform that writes a patient's binary prediction in the kaggle_3m (LGG) mask layout."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import nibabel as nib
import numpy as np
import tifffile
import torch
from monai.config import NdarrayOrTensor
from monai.transforms import Transform

__all__ = ["SaveLggMasks"]


class SaveLggMasks(Transform):
    """Write a patient's binary prediction as kaggle_3m masks: ``<output_dir>/<patient>/<patient>_<n>_mask.tif``.

    Args:
        output_dir: root of the written layout (created if needed).
        nifti: also write ``<output_dir>/<patient>.nii.gz`` (uint8 0/1, ``(H, W, D)``, identity affine: kaggle_3m
            slices carry no geometry).

    Call: ``mask`` ``(1, H, W, D)`` (any numeric type, foreground > 0.5), ``patient`` the folder name, ``slices``
    ``(D,)`` the slice numbers -> the list of written paths. Each slice is an ``(H, W)`` uint8 tif of 0/255.
    """

    def __init__(self, output_dir: str | Path, nifti: bool = False) -> None:
        self.output_dir = Path(output_dir)
        self.nifti = nifti

    def __call__(self, mask: NdarrayOrTensor, patient: str, slices: Sequence[int] | NdarrayOrTensor) -> list[Path]:
        array = mask.detach().cpu().numpy() if isinstance(mask, torch.Tensor) else np.asarray(mask)
        numbers = [int(n) for n in (slices.tolist() if hasattr(slices, "tolist") else slices)]
        if array.ndim != 4 or array.shape[0] != 1 or array.shape[-1] != len(numbers):
            raise ValueError(
                f"SaveLggMasks ({patient}): expected a mask (1, H, W, D) with D = {len(numbers)} slice "
                f"numbers, found shape {array.shape}"
            )
        binary = (array[0] > 0.5).astype(np.uint8)
        folder = self.output_dir / patient
        folder.mkdir(parents=True, exist_ok=True)
        paths = []
        for k, number in enumerate(numbers):
            paths.append(folder / f"{patient}_{number}_mask.tif")
            tifffile.imwrite(paths[-1], binary[..., k] * np.uint8(255))
        if self.nifti:
            paths.append(self.output_dir / f"{patient}.nii.gz")
            nib.save(nib.Nifti1Image(binary, np.eye(4)), str(paths[-1]))
        return paths
