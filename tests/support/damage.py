"""Damaged NIfTI files for the tests of the loaders' whole-file voxel check
(:func:`common.data.problems.read_all_voxels`), and the problems it reports for them."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np

__all__ = ["truncate", "put_non_finite", "voxel_problems"]


def truncate(path: Path) -> Path:
    """Cut the file ``path`` to half its bytes in place: a ``.nii.gz`` header still reads, its voxel stream ends
    early. Returns ``path``."""
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    return path


def put_non_finite(path: Path, nan: int, inf: int = 1) -> Path:
    """Re-save the image ``path`` in place as float32 (an integer type on disk holds no NaN), its affine kept, with
    ``nan`` NaN voxels along ``[0, 0, :nan]`` and ``inf`` inf voxels along ``[1, 1, :inf]``. Returns ``path``."""
    img = nib.load(str(path))
    data = np.asarray(img.dataobj).astype(np.float32)
    data[0, 0, :nan] = np.nan
    data[1, 1, :inf] = np.inf
    nib.save(nib.Nifti1Image(data, img.affine), str(path))
    return path


def voxel_problems(truncated: Path, non_finite: Path, nan: int, inf: int = 1) -> list[str]:
    """The problems :func:`~common.data.problems.read_all_voxels` reports for a file cut by :func:`truncate` and an
    image given ``nan`` NaN and ``inf`` inf voxels by :func:`put_non_finite`."""
    return [
        f"{truncated}: expected a readable NIfTI volume (every voxel of the file), found EOFError",
        f"{non_finite}: expected finite voxel values, found {nan} NaN and {inf} inf",
    ]
