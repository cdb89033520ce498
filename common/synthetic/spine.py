"""Seeded synthetic spine CT in the CSI 2014 layout (``train/img/caseN.mhd``, ``train/seg/caseN_label.mhd``,
``test/...``): a curved column of vertebrae (an elliptic body with a cortical shell, pedicles, a lamina and a spinous
process tilted downwards) in bone HU over soft tissue and fat, intervertebral discs between the bodies, air outside the
body; the count varies with the field of view and the first and last vertebra are cut by the volume edge; curvature,
vertebra size, voxel spacing (anisotropic) and noise vary per case. One label value per vertebra, anatomical numbers
(VerSe's: T1 = 8 ... L5 = 24) increasing from the top (high z) down."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from scipy import ndimage

from common.data.metaimage import write_mhd

__all__ = ["synthetic_spine", "write_synthetic_spine"]

logger = logging.getLogger(__name__)


def synthetic_spine(
    rng: np.random.Generator, shape: Sequence[int], spacing: Sequence[float], scale: float = 1.0
) -> tuple[np.ndarray, np.ndarray]:
    """One synthetic spine CT: ``(image int16 HU [x, y, z], label uint8 [x, y, z])`` on a grid of ``shape`` voxels of
    ``spacing`` mm; ``scale`` multiplies every anatomical size (1: bodies about 13 mm wide and 9 mm high)."""
    shape = tuple(int(s) for s in shape)
    sp = np.asarray(spacing, dtype=float)
    ext = np.asarray(shape) * sp
    x, y, z = np.meshgrid(*[(np.arange(n) + 0.5) * s for n, s in zip(shape, sp)], indexing="ij")
    s = scale
    image = np.full(shape, -1000.0, dtype=np.float32)
    trunk = ((x - ext[0] / 2) / (0.48 * ext[0])) ** 2 + ((y - ext[1] / 2) / (0.48 * ext[1])) ** 2
    image[trunk <= 1] = -90.0  # subcutaneous fat
    image[trunk <= 0.8] = rng.uniform(30, 50)  # muscle and organs
    label = np.zeros(shape, dtype=np.uint8)
    bone = np.zeros(shape, dtype=bool)
    amp_x, amp_y = rng.uniform(0, 0.08) * ext[0], rng.uniform(0, 0.05) * ext[1]
    period, phase = rng.uniform(1.5, 3.0) * ext[2], rng.uniform(0, 2 * np.pi, size=2)

    def centre(zc: float) -> tuple[float, float]:
        return (
            ext[0] / 2 + amp_x * np.sin(2 * np.pi * zc / period + phase[0]),
            0.42 * ext[1] + amp_y * np.sin(2 * np.pi * zc / period + phase[1]),
        )

    height, disc = rng.uniform(8.0, 10.0) * s, rng.uniform(2.5, 3.5) * s
    top = ext[2] - rng.uniform(0.0, 0.35) * height  # the first vertebra is cut by the top of the volume
    bottom = rng.uniform(0.0, 0.35) * height  # and the last by the bottom
    count = max(2, int(round((top - bottom) / (height + disc))) + 1)
    centres = list(np.linspace(top, bottom, count))  # the disc height absorbs the rounding
    first = int(rng.integers(8, max(9, 26 - len(centres))))  # anatomical number of the top vertebra
    previous = None
    for i, zc in enumerate(centres):
        cx, cy = centre(zc)
        rx, ry = rng.uniform(6.0, 7.5) * s, rng.uniform(5.0, 6.0) * s
        dz = np.abs(z - zc)
        body = ((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2 <= 1
        vert = body & (dz <= height / 2)
        back = cy + ry  # posterior edge of the body (+y is posterior)
        for side in (-1, 1):
            vert |= (
                (np.abs(x - cx - side * 0.55 * rx) <= 1.2 * s)
                & (y >= back - 1 * s)
                & (y <= back + 5 * s)
                & (dz <= 0.3 * height)
            )
        vert |= (
            (np.abs(x - cx) <= 0.55 * rx + 1.2 * s) & (y >= back + 3 * s) & (y <= back + 5 * s) & (dz <= 0.3 * height)
        )
        spine_y = (y >= back + 5 * s) & (y <= back + 12 * s) & (np.abs(x - cx) <= 1.2 * s)
        vert |= spine_y & (np.abs(z - (zc - 0.4 * (y - back - 5 * s))) <= 0.25 * height)
        label[vert & (label == 0)] = first + i
        bone |= vert
        if previous is not None:  # the disc between this body and the one above
            pz, (pcx, pcy) = previous, centre(previous)
            mid_x, mid_y = (cx + pcx) / 2, (cy + pcy) / 2
            between = (z > zc + height / 2) & (z < pz - height / 2)
            image[between & (((x - mid_x) / (0.95 * rx)) ** 2 + ((y - mid_y) / (0.95 * ry)) ** 2 <= 1)] = rng.uniform(
                70, 110
            )
        previous = zc
    image[bone] = rng.uniform(180, 320)  # cancellous bone
    shell = bone & ~ndimage.binary_erosion(bone)
    image[shell] = rng.uniform(600, 900)  # cortical bone
    image = ndimage.gaussian_filter(image, sigma=0.6 / sp) + rng.normal(0, rng.uniform(10, 30), size=shape)
    return np.clip(np.round(image), -1024, 3071).astype(np.int16), label


def write_synthetic_spine(
    out: str | Path,
    n_training: int = 10,
    n_testing: int = 4,
    shape: Sequence[int] = (64, 64, 96),
    seed: int = 0,
    scale: float = 1.0,
) -> Path:
    """Write ``n_training`` cases to ``out/train`` and ``n_testing`` to ``out/test`` in the CSI 2014 layout
    (``img/caseN.mhd`` + ``.raw``, ``seg/caseN_label.mhd`` + ``.raw``; cases numbered from 1 on, test after training).
    Each case draws its own voxel spacing (in-plane 0.8-1.2 mm, slices 1-2 mm, so the field of view and the vertebra
    count vary) from ``seed``. Returns ``out``."""
    out = Path(out)
    rng = np.random.default_rng(seed)
    for n in range(1, n_training + n_testing + 1):
        subset = "train" if n <= n_training else "test"
        inplane = rng.uniform(0.8, 1.2)
        spacing = (inplane, inplane, rng.uniform(1.0, 2.0))
        image, label = synthetic_spine(np.random.default_rng(rng.integers(2**32)), shape, spacing, scale)
        write_mhd(out / subset / "img" / f"case{n}.mhd", image, spacing)
        write_mhd(out / subset / "seg" / f"case{n}_label.mhd", label, spacing)
        logger.info("%s/case%d: %d vertebrae, spacing %s", subset, n, len(np.unique(label)) - 1, np.round(spacing, 2))
    return out


if __name__ == "__main__":
    import fire

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    fire.Fire(write_synthetic_spine)  # a smaller size: --shape 48,48,64 --scale 0.7
