"""Seeded synthetic kaggle_3m in the released layout: axial brain slices with a FLAIR-hyperintense lesion over part
of the stack."""

from __future__ import annotations

import csv
import logging
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import tifffile
from scipy import ndimage
from tqdm import tqdm

from common.data.lgg import DATA_CSV_COLUMNS, MASK_VALUES

__all__ = ["SITES", "write_synthetic_lgg"]

logger = logging.getLogger(__name__)

SITES = ("CS", "DU", "EZ", "FG", "HT")


def _draw_patient(rng: np.random.Generator, slices: tuple[int, int]) -> dict:
    """Draw one patient's head, lesion and acquisition parameters."""
    n = int(rng.integers(slices[0], slices[1] + 1))
    extent = float(rng.uniform(0.2, 0.6))  # fraction of the stack the lesion spans
    return {
        "slices": n,
        "head": (float(rng.uniform(0.40, 0.45)), float(rng.uniform(0.32, 0.38))),  # semi-axes, fraction of size
        "tilt": float(np.deg2rad(rng.uniform(-12, 12))),
        "offset": rng.uniform(-0.04, 0.04, size=2),
        "lesion_z": (float(rng.uniform(0.3 + extent / 3, 0.75 - extent / 3)), max(extent / 2, 0.55 / n)),  # >= 1 slice
        "lesion_yx": rng.uniform(-0.45, 0.45, size=2),  # centre, fraction of the brain semi-axes
        "lesion_r": float(rng.uniform(0.05, 0.17)),  # largest in-plane radius, fraction of size
        "harmonics": np.stack([rng.uniform(0, 0.25, 3), rng.uniform(0, 2 * np.pi, 3)], axis=1),
        "contrast": float(rng.uniform(0.35, 0.9)),  # FLAIR hyperintensity over white matter
        "enhancing": bool(rng.random() < 0.25),  # a contrast-enhancing rim on post-contrast
        "gains": rng.uniform(0.55, 1.15, size=3),  # per-channel scanner gain: per-patient scaling matters
        "bias": rng.normal(0, 0.1, size=3),
        "noise": float(rng.uniform(0.01, 0.035)),
        "texture_seed": int(rng.integers(2**31)),
        "age": int(rng.integers(20, 76)),
        "date": f"{int(rng.integers(1995, 2003))}{int(rng.integers(1, 13)):02d}{int(rng.integers(1, 29)):02d}",
    }


def _render_patient(p: dict, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Render ``(D, size, size, 3)`` uint8 slices and ``(D, size, size)`` uint8 0/255 masks."""
    yy, xx = np.meshgrid(np.arange(size) - size / 2 + 0.5, np.arange(size) - size / 2 + 0.5, indexing="ij")
    yy, xx = yy / size - p["offset"][0], xx / size - p["offset"][1]
    c, s = np.cos(p["tilt"]), np.sin(p["tilt"])
    ry, rx = c * yy - s * xx, s * yy + c * xx
    tex_rng = np.random.default_rng(p["texture_seed"])
    sigma = size / 64
    texture = ndimage.gaussian_filter(tex_rng.normal(0, 1, (size, size)), 2 * sigma)
    texture /= texture.std() + 1e-6
    boundary = ndimage.gaussian_filter(tex_rng.normal(0, 1, (size, size)), 3 * sigma)
    boundary /= boundary.std() + 1e-6
    gyri = np.sin(np.arctan2(ry, rx) * 18 + 3 * texture)  # cortical folding along the rim
    bias = 1 + p["bias"][0] * ry + p["bias"][1] * rx + p["bias"][2] * ry * rx * 4
    (ay, ax), n = p["head"], p["slices"]
    zc, hz = p["lesion_z"]
    images = np.zeros((n, size, size, 3), np.float32)
    masks = np.zeros((n, size, size), np.uint8)
    for k in range(n):
        z = (k + 0.5) / n  # 0 skull base .. 1 vertex
        section = np.sqrt(max(1 - ((z - 0.45) / 0.62) ** 2, 0.0))
        head = (ry / (ay * section + 1e-6)) ** 2 + (rx / (ax * section + 1e-6)) ** 2
        by, bx = (ay - 0.035) * section, (ax - 0.035) * section
        brain_r = np.sqrt((ry / (by + 1e-6)) ** 2 + (rx / (bx + 1e-6)) ** 2)
        brain = brain_r < 1
        scalp = (head < 1) & ~brain & (head > 0.93)  # outer band of the head: fat-bright scalp, then dark bone
        skull = (head < 1) & ~brain & ~scalp
        cortex = brain & (brain_r > 0.78 + 0.06 * gyri)
        mid = float(np.exp(-(((z - 0.5) / 0.2) ** 2)))  # ventricles: largest in the middle of the stack
        ventricles = brain & (
            ((ry / (0.16 * by + 1e-6)) ** 2 + ((np.abs(rx) - 0.12 * bx) / (0.07 * bx + 1e-6)) ** 2) < mid
        )
        # (pre-contrast, FLAIR, post-contrast) tissue values: white matter, cortex, CSF, scalp, skull
        wm, gm, csf = np.array([0.55, 0.45, 0.55]), np.array([0.45, 0.6, 0.45]), np.array([0.15, 0.08, 0.18])
        fat, bone = np.array([0.85, 0.5, 0.9]), np.array([0.05, 0.05, 0.05])
        sl = np.zeros((size, size, 3), np.float32)
        sl[brain] = wm * (1 + 0.05 * texture[brain, None])
        sl[cortex] = gm * (1 + 0.06 * texture[cortex, None])
        sl[ventricles] = csf
        sl[scalp] = fat
        sl[skull] = bone
        lesion = np.zeros((size, size), bool)
        if abs(z - zc) < hz:
            radius = p["lesion_r"] * np.sqrt(1 - ((z - zc) / hz) ** 2)
            ly, lx = p["lesion_yx"][0] * by, p["lesion_yx"][1] * bx
            dy, dx = ry - ly, rx - lx
            phi = np.arctan2(dy, dx)
            outline = 1 + sum(a * np.cos(m * phi + ph) for m, (a, ph) in enumerate(p["harmonics"], start=2))
            lesion = (np.hypot(dy, dx) < radius * (outline + 0.12 * boundary)) & brain & ~ventricles
        if lesion.any():
            soft = ndimage.gaussian_filter(lesion.astype(np.float32), sigma)  # infiltrative edge in the image only
            gain = np.array([-0.12, p["contrast"], -0.1])
            sl *= 1 + soft[..., None] * gain * (1 + 0.15 * texture[..., None])
            if p["enhancing"]:
                rim = soft * (1 - soft) * 4
                sl[..., 2] *= 1 + 0.6 * rim
        sl = ndimage.gaussian_filter(sl * bias[..., None], (0.6, 0.6, 0))
        images[k] = sl
        masks[k] = lesion.astype(np.uint8) * MASK_VALUES[1]
    return images, masks


def _write_patient(folder: Path, p: dict, size: int, rng: np.random.Generator) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    images, masks = _render_patient(p, size)
    images = images + rng.normal(0, p["noise"], images.shape).astype(np.float32)
    images = np.clip(images * p["gains"] * 255, 0, 255).astype(np.uint8)
    for k in range(p["slices"]):
        tifffile.imwrite(folder / f"{folder.name}_{k + 1}.tif", images[k], photometric="rgb")
        tifffile.imwrite(folder / f"{folder.name}_{k + 1}_mask.tif", masks[k])


def write_synthetic_lgg(
    out: str | Path, n_patients: int = 20, seed: int = 0, size: int = 256, slices: Sequence[int] = (16, 24)
) -> Path:
    """Write a synthetic LGG copy in the kaggle_3m layout under ``out/kaggle_3m/``; equal arguments give equal files.

    Each patient (``TCGA_<site>_<5000 + k>_<date>``) gets its own head shape and tilt, slice count in ``slices``
    (inclusive range), per-channel scanner gain, bias field and noise, and one FLAIR-hyperintense lesion of its own
    size, outline, contrast and height in the stack (about 20-60 % of the slices; the others have none); a quarter of
    the lesions enhance on post-contrast. Masks are 0/255; ``data.csv`` has the real columns. Returns ``out`` (the
    folder holding ``kaggle_3m/``, i.e. a ``dataset_dir``).
    """
    slices = tuple(int(s) for s in slices)
    if n_patients < 1 or size < 16 or len(slices) != 2 or not 1 <= slices[0] <= slices[1]:
        raise ValueError(
            f"write_synthetic_lgg: expected n_patients >= 1, size >= 16 and slices (min, max) with "
            f"1 <= min <= max, found {n_patients}, {size}, {slices}"
        )
    out = Path(out)
    root = out / "kaggle_3m"
    t0 = time.perf_counter()
    rows = []
    for k in tqdm(range(n_patients), desc="synthetic LGG", disable=None):
        rng = np.random.default_rng([seed, k])  # per patient: a patient does not depend on the others
        p = _draw_patient(rng, slices)
        pid = f"TCGA_{SITES[k % len(SITES)]}_{5000 + k:04d}"
        _write_patient(root / f"{pid}_{p['date']}", p, size, rng)
        clusters = [str(int(v)) for v in rng.integers(1, 5, size=7)]
        rows.append(
            [
                pid,
                *clusters,
                str(int(rng.integers(1, 4))),
                str(int(rng.integers(1, 3))),
                "1",
                str(int(rng.integers(1, 4))),
                str(int(rng.integers(1, 6))),
                str(int(rng.integers(1, 3))),
                str(p["age"]),
                "3",
                "2",
                str(int(rng.random() < 0.3)),
            ]
        )
    with open(root / "data.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(DATA_CSV_COLUMNS)
        writer.writerows(rows)
    logger.info("wrote %d synthetic LGG patients to %s in %.1f s", n_patients, root, time.perf_counter() - t0)
    return out


if __name__ == "__main__":
    import fire

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")

    def main(out: str = "data/lgg", n_patients: int = 20, seed: int = 0, size: int = 256, slices=(16, 24)) -> None:
        """Write a synthetic kaggle_3m copy to ``out/kaggle_3m``."""
        write_synthetic_lgg(out, n_patients, seed, size, slices)

    fire.Fire(main)
