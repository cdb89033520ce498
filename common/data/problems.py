"""The one error a loader raises for every problem it found in a data set's layout, headers or voxels at once, and the
whole-file read of a NIfTI volume that the loaders' voxel checks share."""

from __future__ import annotations

from pathlib import Path
from typing import NoReturn

import nibabel as nib
import numpy as np

__all__ = ["raise_problems", "read_all_voxels"]


def raise_problems(
    error: type[Exception], root: str | Path, what: str, problems: list[str], hint: str | None = None, limit: int = 50
) -> NoReturn:
    """Raise ``error`` naming ``root``, ``what`` was wrong and the count of ``problems``, then the first ``limit`` of
    them one per line (each names its file) and, when given, a ``hint`` on how to fix them."""
    raise error(
        f"{root}: {what} ({len(problems)} problems):\n  "
        + "\n  ".join(problems[:limit])
        + (f"\n  ... and {len(problems) - limit} more" if len(problems) > limit else "")
        + (f"\nHint: {hint}" if hint else "")
    )


def read_all_voxels(path: Path, problems: list[str], finite: bool = True) -> np.ndarray | None:
    """Every voxel of the NIfTI file ``path`` (the whole gzip stream: a header does not tell a truncated ``.nii.gz``),
    ``(H, W, D)`` with the header's scaling applied; ``None``, with a problem naming the file appended to
    ``problems``, when it cannot be read. With ``finite``, a float volume holding NaN or inf appends a problem too
    (counting each), and its data are still returned for the caller's own checks."""
    try:
        data = np.asanyarray(nib.load(str(path)).dataobj)
    except Exception as e:  # truncated or corrupt gzip streams raise EOFError, zlib.error, OSError, ValueError
        problems.append(
            f"{path}: expected a readable NIfTI volume (every voxel of the file), found {type(e).__name__}: {e}"
        )
        return None
    if finite and data.dtype.kind == "f" and not np.isfinite(data).all():
        problems.append(
            f"{path}: expected finite voxel values, found {int(np.isnan(data).sum())} NaN and "
            f"{int(np.isinf(data).sum())} inf"
        )
    return data
