"""common.data.problems: one error listing every problem (the count, a limit, the hint), and the whole-file voxel read
the loaders share: an unreadable stream and NaN / inf named per file (the messages the loaders' errors hold), a
mask's own value check left to its loader (``finite=False``)."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from common.data.problems import raise_problems, read_all_voxels
from tests.support.damage import put_non_finite, truncate, voxel_problems


def _volume(path: Path, data: np.ndarray) -> Path:
    nib.save(nib.Nifti1Image(data, np.diag([1.0, 1.0, 2.0, 1.0])), str(path))
    return path


def test_read_all_voxels_names_the_unreadable_and_the_non_finite_file(tmp_path):
    image = np.random.default_rng(0).integers(0, 1000, (16, 16, 12)).astype(np.int16)  # the header: a small part
    truncated = truncate(_volume(tmp_path / "cut.nii.gz", image))
    nan = put_non_finite(_volume(tmp_path / "nan.nii.gz", image), nan=3, inf=2)
    problems: list[str] = []
    assert read_all_voxels(truncated, problems) is None
    data = read_all_voxels(nan, problems)
    assert data.shape == (16, 16, 12) and int(np.isnan(data).sum()) == 3  # returned for the caller's own checks
    assert len(problems) == 2
    assert problems[0].startswith(voxel_problems(truncated, nan, nan=3, inf=2)[0])
    assert problems[1] == voxel_problems(truncated, nan, nan=3, inf=2)[1]
    unchecked: list[str] = []
    assert np.isnan(read_all_voxels(nan, unchecked, finite=False)).sum() == 3 and unchecked == []


def test_read_all_voxels_applies_the_scaling_and_passes_integers(tmp_path):
    img = nib.Nifti1Image(np.arange(24, dtype=np.int16).reshape(2, 3, 4), np.eye(4))
    img.header.set_slope_inter(0.5, 1.0)
    nib.save(img, str(tmp_path / "scaled.nii"))
    problems: list[str] = []
    data = read_all_voxels(tmp_path / "scaled.nii", problems)
    np.testing.assert_allclose(data, np.arange(24).reshape(2, 3, 4) * 0.5 + 1.0)
    labels = read_all_voxels(_volume(tmp_path / "labels.nii.gz", np.ones((2, 3, 4), np.uint8)), problems)
    assert labels.dtype == np.uint8 and problems == []
    (tmp_path / "text.nii.gz").write_bytes(b"not a nifti file")
    assert read_all_voxels(tmp_path / "text.nii.gz", problems) is None
    assert problems[0].startswith(f"{tmp_path / 'text.nii.gz'}: expected a readable NIfTI volume (every voxel")


def test_raise_problems_counts_limits_and_hints():
    with pytest.raises(ValueError) as e:
        raise_problems(ValueError, "/data", "bad voxels", [f"f{i}: bad" for i in range(5)], "fetch again", limit=3)
    assert (
        str(e.value)
        == "/data: bad voxels (5 problems):\n  f0: bad\n  f1: bad\n  f2: bad\n  ... and 2 more\nHint: fetch again"
    )
