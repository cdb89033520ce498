"""Seeded synthetic ACDC in the distributed layout: short-axis bSSFP-like stacks (LV blood pool, myocardial ring,
RV crescent)."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage
from tqdm import tqdm

from common.data.acdc import GROUPS

__all__ = ["write_synthetic_acdc"]

logger = logging.getLogger(__name__)

# Per group: ED endocardial radius (mm), myocardial thickness (mm), ES/ED radius ratio, RV size factor.
_GROUP_SHAPE = {
    "NOR": (24.0, 8.0, 0.68, 1.0),
    "MINF": (28.0, 7.5, 0.85, 1.0),
    "DCM": (33.0, 6.5, 0.90, 1.05),
    "HCM": (20.0, 14.0, 0.55, 0.95),
    "RV": (23.0, 8.0, 0.70, 1.6),
}


def _perturbed_radius(phi: np.ndarray, radius: float, harmonics: np.ndarray) -> np.ndarray:
    """Radius ``r(phi) = radius * (1 + sum_k a_k cos(k phi + p_k))``: a smooth, non-circular outline."""
    out = np.ones_like(phi)
    for k, (a, p) in enumerate(harmonics, start=2):
        out += a * np.cos(k * phi + p)
    return radius * out


def _draw_patient(rng: np.random.Generator, group: str) -> dict:
    """Draw one patient's anatomy and acquisition parameters."""
    r_endo, thick, es_ratio, rv_size = _GROUP_SHAPE[group]
    return {
        "shape": (int(rng.integers(140, 201)), int(rng.integers(140, 201))),
        "spacing": (float(rng.uniform(1.2, 1.6)),) * 2 + (float(rng.uniform(6.0, 10.0)),),
        "body": rng.uniform(0.40, 0.49, size=2),  # semi-axes, fraction of the field of view
        "lung": (float(rng.uniform(0.22, 0.32)), float(rng.uniform(0.10, 0.15)), float(rng.uniform(0.2, 0.3))),
        "slices": int(rng.integers(6, 11)),
        "frames": int(rng.integers(10, 17)),
        "es_frac": float(rng.uniform(0.3, 0.42)),
        "r_endo": r_endo * rng.uniform(0.88, 1.12),
        "thick": thick * rng.uniform(0.85, 1.15),
        "es_ratio": float(np.clip(es_ratio + rng.normal(0, 0.03), 0.5, 0.95)),
        "rv_size": rv_size * rng.uniform(0.85, 1.15),
        "rv_extent": float(rng.uniform(0.6, 0.9)),  # fraction of slices (from the base) with an RV cavity
        "angle": float(np.deg2rad(180 + rng.uniform(-35, 35))),  # direction LV -> RV in the image plane
        "offset": rng.uniform(-0.12, 0.12, size=2),  # heart centre offset, fraction of the field of view
        "harmonics": np.stack([rng.uniform(0, 0.06, 2), rng.uniform(0, 2 * np.pi, 2)], axis=1),
        "infarct": (float(rng.uniform(0, 2 * np.pi)), 0.55) if group == "MINF" else None,  # thin sector
        "blood": float(rng.uniform(0.8, 1.0)),
        "myo": float(rng.uniform(0.18, 0.32)),
        "tissue": float(rng.uniform(0.35, 0.5)),
        "noise": float(rng.uniform(0.02, 0.05)),
        "bias": rng.normal(0, 0.12, size=5),
        "texture_seed": int(rng.integers(2**31)),
        "papillary": rng.uniform(0, 2 * np.pi, size=2),
    }


def _render_frame(p: dict, contraction: float) -> tuple[np.ndarray, np.ndarray]:
    """Render one frame: ``contraction`` 0 = end-diastole, 1 = end-systole. Returns (image (H, W, S), label)."""
    (h, w), (sy, sx, _), n_s = p["shape"], p["spacing"], p["slices"]
    yy, xx = np.meshgrid((np.arange(h) - h / 2) * sy, (np.arange(w) - w / 2) * sx, indexing="ij")
    cy, cx = p["offset"][0] * h * sy, p["offset"][1] * w * sx
    ry, rx = yy - cy, xx - cx
    dist, phi = np.hypot(ry, rx), np.arctan2(ry, rx)
    tex_rng = np.random.default_rng(p["texture_seed"])  # same texture in every frame of a patient
    texture = ndimage.gaussian_filter(tex_rng.normal(0, 1, (h, w)), 4.0)
    texture /= texture.std() + 1e-6
    (by, bx), (ly, lx, lpos) = p["body"], p["lung"]
    body = (yy / (by * h * sy)) ** 2 + (xx / (bx * w * sx)) ** 2 < 1
    fat = body & ((yy / ((by - 0.04) * h * sy)) ** 2 + (xx / ((bx - 0.04) * w * sx)) ** 2 >= 1)
    lungs = [(yy / (ly * h * sy)) ** 2 + ((xx - s * lpos * w * sx) / (lx * w * sx)) ** 2 < 1 for s in (-1, 1)]
    liver = (
        body & ~fat & (((yy - 0.3 * h * sy) / (0.2 * h * sy)) ** 2 + ((xx - 0.15 * w * sx) / (0.3 * w * sx)) ** 2 < 1)
    )
    bias = (
        1 + p["bias"][0] * yy / (h * sy) + p["bias"][1] * xx / (w * sx) + p["bias"][2] * (yy * xx) / (h * w * sy * sx)
    )

    r_endo_ed, r_epi_ed = p["r_endo"], p["r_endo"] + p["thick"]
    ratio = 1 + contraction * (p["es_ratio"] - 1)
    image = np.zeros((h, w, n_s), np.float32)
    label = np.zeros((h, w, n_s), np.uint8)
    for s in range(n_s):
        z = s / max(n_s - 1, 1)  # 0 base .. 1 apex
        taper = np.sqrt(max(1 - 0.85 * z**2, 0.0))
        r_endo = r_endo_ed * ratio * taper * (1 - 0.35 * z)
        r_epi = np.sqrt(r_endo**2 + (r_epi_ed**2 - r_endo_ed**2) * taper**2)  # myocardial area conserved
        endo_r = _perturbed_radius(phi, r_endo, p["harmonics"])
        epi_r = _perturbed_radius(phi, r_epi, p["harmonics"] * 0.5)
        if p["infarct"] is not None:  # thinned, akinetic sector: the cavity bulges into it
            ang, width = p["infarct"]
            sector = np.exp(-(np.angle(np.exp(1j * (phi - ang))) ** 2) / (2 * width**2))
            endo_r = endo_r + sector * (r_epi - r_endo) * 0.45
        lv = dist < endo_r
        myo = (dist < epi_r) & ~lv
        rv = np.zeros_like(lv)
        if z <= p["rv_extent"]:
            rv_scale = p["rv_size"] * (1 - 0.35 * contraction) * taper**1.5
            ux, uy = np.cos(p["angle"]), np.sin(p["angle"])
            centre = r_epi * 0.55 + 0.45 * r_endo_ed * rv_scale
            ay, ax = ry - uy * centre, rx - ux * centre
            along, across = ax * ux + ay * uy, -ax * uy + ay * ux
            rv = (along / (0.75 * r_endo_ed * rv_scale)) ** 2 + (across / (1.7 * r_endo_ed * rv_scale)) ** 2 < 1
            rv &= dist >= epi_r
        rv_wall = ndimage.binary_dilation(rv, iterations=2) & ~rv & ~myo & ~lv
        pericardial = ndimage.binary_dilation(myo | rv | rv_wall, iterations=3) & ~(myo | rv | rv_wall | lv)
        sl = np.full((h, w), 0.0, np.float32)
        sl[body] = p["tissue"] * (1 + 0.12 * texture[body])
        sl[fat] = 0.85
        sl[liver] = p["tissue"] * 0.75
        for lung in lungs:
            sl[lung & body & ~liver] = 0.06
        sl[pericardial & (texture > 0)] = 0.75  # patchy epicardial fat
        sl[rv_wall | myo] = p["myo"]
        sl[lv | rv] = p["blood"]
        for a in p["papillary"]:  # papillary muscles: myocardial signal inside the LV cavity (labelled LV in ACDC)
            py, px = np.sin(a) * r_endo * 0.6, np.cos(a) * r_endo * 0.6
            sl[lv & (np.hypot(ry - py, rx - px) < max(1.5, 0.18 * r_endo))] = p["myo"] * 1.2
        sl = ndimage.gaussian_filter(sl * bias, 0.7)  # point-spread function
        image[..., s] = sl
        label[..., s] = np.select([lv, myo, rv], [3, 2, 1], 0)
    return image, label


def _write_nifti(array: np.ndarray, spacing: Sequence[float], path: Path) -> None:
    affine = np.diag([*spacing[:3], 1.0])
    img = nib.Nifti1Image(array, affine)
    img.header.set_zooms(tuple(spacing[:3]) + (1.0,) * (array.ndim - 3))
    nib.save(img, str(path))


def _write_patient(folder: Path, p: dict, group: str, rng: np.random.Generator) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    n_t, ed = p["frames"], 1
    es = 1 + int(round(p["es_frac"] * n_t))
    phase = np.arange(n_t)  # contraction rises to end-systole, then relaxes: a smooth cardiac cycle
    contraction = np.where(phase <= es - 1, phase / (es - 1), (n_t - phase) / (n_t - es + 1)) ** 1.2
    frames, labels = [], []
    for t in range(n_t):
        img, lab = _render_frame(p, float(np.clip(contraction[t], 0, 1)))
        noise = rng.normal(0, p["noise"], (2,) + img.shape)  # Rician magnitude noise
        frames.append(np.hypot(img + noise[0], noise[1]))
        labels.append(lab)
    scale = 800.0
    volume = np.clip(np.stack(frames, axis=-1) * scale, 0, 32767).astype(np.int16)
    _write_nifti(volume, p["spacing"], folder / f"{folder.name}_4d.nii.gz")
    for number in (ed, es):
        _write_nifti(volume[..., number - 1], p["spacing"], folder / f"{folder.name}_frame{number:02d}.nii.gz")
        _write_nifti(labels[number - 1], p["spacing"], folder / f"{folder.name}_frame{number:02d}_gt.nii.gz")
    height, weight = rng.uniform(150, 195), rng.uniform(50, 110)
    (folder / "Info.cfg").write_text(
        f"ED: {ed}\nES: {es}\nGroup: {group}\nHeight: {height:.1f}\nNbFrame: {n_t}\nWeight: {weight:.1f}\n"
    )


def write_synthetic_acdc(out: str | Path, n_training: int = 30, n_testing: int = 10, seed: int = 0) -> Path:
    """Write a synthetic ACDC copy in the distributed layout; equal seeds give identical files.

    Patients ``patient001..`` go to ``training/`` and ``patient101..`` (after the training ones if there are more than
    100) to ``testing/``; groups cycle NOR, MINF, DCM, HCM, RV. Each patient has its own field of view, spacing,
    slice count, frame count, heart position and orientation, LV/RV size and wall thickness by group, contrast,
    bias field and Rician noise; ED is frame 1, ES about a third into the cycle.
    """
    if n_training < 1 or n_testing < 0:
        raise ValueError(
            f"write_synthetic_acdc: expected n_training >= 1 and n_testing >= 0, found " f"{n_training}, {n_testing}"
        )
    out = Path(out)
    t0 = time.perf_counter()
    first_test = 101 if n_training <= 100 else n_training + 1
    ids = [("training", i) for i in range(1, n_training + 1)] + [("testing", first_test + i) for i in range(n_testing)]
    for k, (subset, number) in enumerate(tqdm(ids, desc="synthetic ACDC", disable=None)):
        rng = np.random.default_rng([seed, number])  # per patient: a patient does not depend on the others
        group = GROUPS[k % len(GROUPS)]
        _write_patient(out / subset / f"patient{number:03d}", _draw_patient(rng, group), group, rng)
    logger.info("wrote %d synthetic ACDC patients to %s in %.1f s", len(ids), out, time.perf_counter() - t0)
    return out


if __name__ == "__main__":
    import fire

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")

    def main(out: str = "data/acdc", n_training: int = 30, n_testing: int = 10, seed: int = 0) -> None:
        """Write a synthetic ACDC copy to ``out``."""
        write_synthetic_acdc(out, n_training, n_testing, seed)

    fire.Fire(main)
