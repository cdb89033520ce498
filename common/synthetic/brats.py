"""Seeded synthetic BraTS 2020 / 2021 in the distributed layout: skull-stripped brains (white and grey matter, CSF,
ventricles, deep grey matter) in four co-registered modalities, with one or two gliomas (oedema, enhancing rim,
necrotic or non-enhancing core)."""

from __future__ import annotations

import csv
import logging
import time
from collections.abc import Sequence
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage
from tqdm import tqdm

from common.data.brats import BRATS_LABELS, BRATS_MODALITIES

__all__ = [
    "TRAINING_FOLDERS",
    "VALIDATION_FOLDERS",
    "NAME_MAPPING_COLUMNS",
    "SURVIVAL_INFO_COLUMNS",
    "SURVIVAL_EVALUATION_COLUMNS",
    "brats_affine",
    "write_synthetic_brats",
]

logger = logging.getLogger(__name__)

TRAINING_FOLDERS = {2020: "MICCAI_BraTS2020_TrainingData", 2021: "RSNA_ASNR_MICCAI_BraTS2021_TrainingData_16July2021"}


VALIDATION_FOLDERS = {2020: "MICCAI_BraTS2020_ValidationData", 2021: "RSNA_ASNR_MICCAI_BraTS2021_ValidationData"}


NAME_MAPPING_COLUMNS = (
    "Grade", "BraTS_2017_subject_ID", "BraTS_2018_subject_ID", "TCGA_TCIA_subject_ID", "BraTS_2019_subject_ID",
    "BraTS_2020_subject_ID",
)  # fmt: skip


SURVIVAL_INFO_COLUMNS = ("Brats20ID", "Age", "Survival_days", "Extent_of_Resection")


SURVIVAL_EVALUATION_COLUMNS = ("BraTS20ID", "Age", "ResectionStatus")


# Signal of each tissue in the BRATS_MODALITIES order (FLAIR, T1, T1ce, T2), white matter on T1 = 1: T1 WM > GM > CSF,
# T2 CSF bright, FLAIR CSF dark; oedema bright on FLAIR and T2, the enhancing rim bright on T1ce, necrosis dark on T1.
# White-matter hyperintensities (small-vessel spots, periventricular caps) are FLAIR-bright look-alikes that are not
# tumour: with the grey matter, the bias field and the noise they overlap the oedema's FLAIR range.
_SIGNAL = {
    "wm": (0.50, 1.00, 0.95, 0.42),
    "gm": (0.66, 0.72, 0.70, 0.60),
    "deep": (0.58, 0.84, 0.80, 0.50),
    "csf": (0.12, 0.28, 0.30, 1.00),
    "wmh": (0.74, 0.84, 0.82, 0.70),
    "oedema": (0.78, 0.68, 0.66, 0.84),
    "enhancing": (0.80, 0.72, 1.45, 0.72),
    "necrosis": (0.55, 0.36, 0.40, 0.98),
    "non-enhancing": (0.90, 0.56, 0.56, 0.92),
}


_TISSUES = ("wm", "gm", "deep", "csf", "wmh")  # the normal tissues, mixed by their fractions in each voxel


_FULL_SIZE_MM = 75.0  # mean semi-axis of the brain at 240x240x155: lengths in mm below are scaled by semi-axis / this


def brats_affine(shape: Sequence[int]) -> np.ndarray:
    """The 1 mm affine of the released files (voxel axes flipped in x and y): ``(4, 4)`` float64."""
    affine = np.diag([-1.0, -1.0, 1.0, 1.0])
    affine[1, 3] = shape[1] - 1
    return affine


def _step(x: np.ndarray) -> np.ndarray:
    """Logistic step ``1 / (1 + exp(-x))`` in float32 (torch's kernel: several times faster than scipy's expit)."""
    return torch.sigmoid(torch.from_numpy(np.asarray(x, dtype=np.float32))).numpy()


def _smooth_field(rng: np.random.Generator, shape: Sequence[int], cell: float) -> np.ndarray:
    """Zero-mean, unit-sd smooth random field of ``shape`` (float32) whose features are about ``cell`` voxels wide
    (at least 2: finer would be voxel noise): white noise on a grid of ``cell / 2`` spacing, Gaussian-smoothed there
    (so that the trilinear upsampling shows no kinks), then upsampled."""
    cell = max(cell, 2.0)
    coarse = tuple(max(4, int(np.ceil(2 * s / cell)) + 2) for s in shape)
    grid = ndimage.gaussian_filter(rng.standard_normal(coarse, dtype=np.float32), 1.0)
    field = F.interpolate(torch.from_numpy(grid)[None, None], size=tuple(shape), mode="trilinear", align_corners=True)
    field = field[0, 0].numpy()
    sample = field[::3, ::3, ::3]  # enough voxels for the moments of a field this smooth, at a 27th of the cost
    return (field - sample.mean()) * float(1 / (sample.std() + 1e-6))


def _box(centre: np.ndarray, half: np.ndarray, shape: Sequence[int]) -> tuple[slice, slice, slice]:
    """Slices of the box ``centre +- half`` (voxels), clipped to ``shape``."""
    lo = np.clip(np.floor(centre - half), 0, shape).astype(int)
    hi = np.clip(np.ceil(centre + half) + 1, 0, shape).astype(int)
    return tuple(slice(a, b) for a, b in zip(lo, hi))


def _inside(rng: np.random.Generator, lo: float, hi: float) -> np.ndarray:
    """A point in normalised brain coordinates at a normalised radius drawn in ``[lo, hi)``."""
    direction = rng.normal(size=3)
    return direction / np.linalg.norm(direction) * rng.uniform(lo, hi)


def _draw_tumour(rng: np.random.Generator, first: bool, enhancing: bool) -> dict:
    """One glioma: position (fraction of the brain semi-axes), sizes (mm at full size), shape and contrast."""
    radius = float(rng.uniform(7, 18) if first else rng.uniform(5, 10))
    return {
        "centre": _inside(rng, 0.1, 0.6),
        "radius": radius,
        "axes": rng.uniform(0.75, 1.3, size=3),
        "rotation": np.linalg.qr(rng.normal(size=(3, 3)))[0],
        "oedema": float(rng.uniform(1.3, 2.2)),  # oedema extent over core radius
        "necrosis": float(rng.uniform(0.35, 0.7)) if enhancing and radius > 9 else 0.0,  # of the core radius
        "enhancing": enhancing,
        "irregularity": float(rng.uniform(0.1, 0.25)),
        "contrast": rng.uniform(0.85, 1.15, size=4),  # per modality, on the tumour signals
    }


def _draw_case(rng: np.random.Generator, shape: Sequence[int]) -> dict:
    """Draw one case's anatomy, tumours and acquisition parameters."""
    shape_arr = np.asarray(shape, dtype=np.float64)
    enhancing = bool(rng.random() < 0.8)  # about a fifth are lower-grade-like: no enhancing tumour
    return {
        "semi": np.array([0.29, 0.355, 0.41]) * shape_arr * rng.uniform(0.93, 1.04, size=3),
        "centre": (shape_arr - 1) / 2 + rng.uniform(-0.02, 0.02, size=3) * shape_arr,
        "ventricles": float(rng.uniform(0.7, 1.6)),  # ventricle width factor (atrophy)
        "caps": float(rng.uniform(0.2, 1.0)),  # periventricular hyperintensity
        "spots": [(_inside(rng, 0.2, 0.75), float(rng.uniform(1.5, 4.5))) for _ in range(int(rng.integers(0, 9)))],
        "signal": rng.uniform(0.95, 1.05, size=(len(_TISSUES), 4)),  # scanner contrast per tissue and modality
        "gain": rng.uniform(300, 1200, size=4),  # scanner scale per modality
        "noise": float(rng.uniform(0.015, 0.035)),  # of the white-matter signal of each modality
        "bias": float(rng.uniform(0.08, 0.18)),
        "tumours": [_draw_tumour(rng, k == 0, enhancing) for k in range(1 + int(rng.random() < 0.3))],
        "age": float(np.round(rng.uniform(20, 85), 3)),
        "survival_days": int(rng.integers(5, 1800)),
        "resection": ["GTR", "STR", "NA"][int(rng.integers(3))],
        "fields": int(rng.integers(2**31)),
    }


def _ellipsoid(
    grids: Sequence[np.ndarray],
    centre: Sequence[float],
    semi: Sequence[float],
    width: float,
    bend: tuple[float, float] = (0.0, 0.0),
) -> tuple[tuple[slice, ...], np.ndarray]:
    """Soft membership (1 inside, 0 outside, over ``width`` of the normalised radius) of an ellipsoid in normalised
    brain coordinates, bent along its second axis (its centre moves by ``bend[0] * t**2`` along the first axis and
    ``bend[1] * t**2`` along the third, ``t`` the normalised position along the second), on the box that holds it:
    ``(box slices, membership)``."""
    reach = (1.5 * semi[0] + 2.25 * abs(bend[0]), 1.5 * semi[1], 1.5 * semi[2] + 2.25 * abs(bend[1]))  # t <= 1.5
    box = tuple(
        slice(int(np.searchsorted(g, c - h)), int(np.searchsorted(g, c + h))) for g, c, h in zip(grids, centre, reach)
    )
    u, v, w = (g[b] for g, b in zip(grids, box))
    t2 = ((v - centre[1]) / semi[1]) ** 2
    q = ((u[:, None, None] - centre[0] - bend[0] * t2[None, :, None]) / semi[0]) ** 2 + t2[None, :, None]
    q = q + ((w[None, None, :] - centre[2] - bend[1] * t2[None, :, None]) / semi[2]) ** 2
    return box, _step((1 - np.sqrt(q)) / width)


def _tissues(p: dict, grids: Sequence[np.ndarray], scale: float, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Brain mask and tissue fractions (white matter, cortex, deep grey matter, CSF, white-matter hyperintensities)
    on the brain's box, whose normalised coordinates are ``grids`` (the brain's semi-axes are 1)."""
    u, v, w = grids
    shape = (len(u), len(v), len(w))
    r = np.sqrt(u[:, None, None] ** 2 + v[None, :, None] ** 2 + w[None, None, :] ** 2)
    r = r * (1 + 0.035 * _smooth_field(rng, shape, 40 * scale))  # a lumpy outline, not an exact ellipsoid
    brain = r < 1
    depth = (1 - r) * float(np.mean(p["semi"]))  # mm from the brain surface (approximately)
    gyri, sulci = _smooth_field(rng, shape, 9 * scale), np.abs(_smooth_field(rng, shape, 6 * scale))
    near_surface = _step((14 * scale - depth) / (2 * scale))
    csf = np.maximum(_step((1.0 * scale - depth) / (0.5 * scale)), _step((0.12 - sulci) / 0.04) * near_surface)
    cortex = _step(((3.0 + 1.5 * gyri) * scale - depth) / (0.6 * scale))  # cortical ribbon, varying thickness
    cortex = np.maximum(cortex, _step((0.4 - sulci) / 0.08) * near_surface)  # and lining the sulci
    # the interhemispheric fissure: CSF lined by cortex on the midline, above the corpus callosum and at both ends
    fissure = np.maximum(_step((w[None, None, :] - 0.3) / 0.04), _step((np.abs(v[None, :, None]) - 0.55) / 0.04))
    midline = np.abs(u)[:, None, None] * float(p["semi"][0]) / scale  # mm from the midline, at full size
    csf = np.maximum(csf, _step((0.8 - midline) / 0.4) * fissure)
    cortex = np.maximum(cortex, _step((3.5 - midline) / 0.6) * fissure)
    deep = np.zeros(shape, np.float32)
    vs = p["ventricles"]
    for side in (-1, 1):
        box, m = _ellipsoid(grids, (side * 0.2, -0.02, -0.02), (0.1, 0.16, 0.12), 0.15)  # basal ganglia, thalamus
        deep[box] = np.maximum(deep[box], m)
        # lateral ventricle: horns diverging at both ends, arched over the thalamus (a C in sagittal view)
        box, m = _ellipsoid(grids, (side * 0.07, -0.05, 0.14), (0.045 * vs, 0.42, 0.08 * vs), 0.12, (side * 0.1, -0.2))
        csf[box] = np.maximum(csf[box], m)
    box, m = _ellipsoid(grids, (0.0, -0.03, -0.05), (0.015 * vs, 0.14, 0.12), 0.15)  # third ventricle
    csf[box] = np.maximum(csf[box], m)
    wmh = np.zeros(shape, np.float32)
    for centre, radius in p["spots"]:
        box, m = _ellipsoid(grids, centre, radius * scale / p["semi"], 0.3)
        wmh[box] = np.maximum(wmh[box], m)
    for side in (-1, 1):  # caps at the horns of the lateral ventricles
        for end in (-0.42, 0.32):
            centre = (side * (0.07 + 0.1 * (end / 0.42) ** 2), end - 0.05, 0.14 - 0.2 * (end / 0.42) ** 2)
            box, m = _ellipsoid(grids, centre, (0.08, 0.12, 0.1), 0.3)
            wmh[box] = np.maximum(wmh[box], m * p["caps"])
    gm = (1 - csf) * cortex
    deep = (1 - csf - gm) * deep
    wmh = (1 - csf - gm - deep) * wmh
    return {"brain": brain, "csf": csf, "gm": gm, "deep": deep, "wmh": wmh, "wm": 1 - csf - gm - deep - wmh}


def _bias(rng: np.random.Generator, shape: Sequence[int], amplitude: float) -> np.ndarray:
    """Smooth multiplicative bias field ``1 + amplitude * f`` (at least 0.5), ``f`` a unit-sd sum of three
    separable low-order terms."""
    field = np.zeros(shape, np.float32)
    for _ in range(3):
        terms = []
        for n in shape:
            t = np.linspace(-1, 1, n, dtype=np.float32)
            a = rng.normal(size=3).tolist()
            terms.append(a[0] * t + a[1] * (1.5 * t**2 - 0.5) + a[2] * np.cos(np.pi * t))
        field += terms[0][:, None, None] * terms[1][None, :, None] * terms[2][None, None, :]
    return np.maximum(1 + field * float(amplitude / (field[::3, ::3, ::3].std() + 1e-6)), 0.5)


def _add_tumour(
    t: dict, p: dict, images: np.ndarray, code: np.ndarray, tissue: dict, scale: float, rng: np.random.Generator
) -> None:
    """Paint one tumour into ``images`` (4, *S) and its label codes (1 oedema, 2 core, 3 enhancing) into ``code``."""
    shape = code.shape
    centre = p["centre_box"] + t["centre"] * p["semi"]  # voxel (= mm) coordinates in the brain box
    radius = t["radius"] * scale
    half = np.full(3, radius * t["oedema"] * t["axes"].max() * 1.5 + 3)
    box = _box(centre, half, shape)
    x, y, z = ((np.arange(b.start, b.stop) - c).astype(np.float32) for b, c in zip(box, centre))
    xyz = (x[:, None, None], y[None, :, None], z[None, None, :])
    # coordinates along the tumour's own (rotated) axes
    local = [sum(float(t["rotation"][j, k]) * xyz[j] for j in range(3)) for k in range(3)]
    sub = tuple(b.stop - b.start for b in box)
    d = np.sqrt(sum((local[k] / float(t["axes"][k])) ** 2 for k in range(3))) / radius
    q = d + t["irregularity"] * _smooth_field(rng, sub, 6 * scale)
    spared = tissue["gm"][box] + tissue["csf"][box]  # oedema spreads along white matter, less into cortex and CSF
    q_oedema = d / t["oedema"] + 0.22 * _smooth_field(rng, sub, 10 * scale) + 0.35 * spared
    inside = tissue["brain"][box]
    w_core = _step((1 - q) / 0.05) * inside
    w_tumour = np.maximum(w_core, _step((1 - q_oedema) / 0.06) * inside)  # the label: oedema where above 1/2
    # the signal fades over a wider edge that wanders about the labelled one (infiltration, rater's judgement)
    fade = _step((1 - q_oedema + 0.08 * _smooth_field(rng, sub, 5 * scale)) / 0.12) * inside
    w_signal = np.maximum(w_core, fade)
    necrosis_edge = t["necrosis"] + 0.08 * _smooth_field(rng, sub, 4 * scale)
    w_necrosis = _step((necrosis_edge - q) / 0.05) if t["necrosis"] > 0 else np.zeros(sub, np.float32)
    texture = 1 + 0.07 * _smooth_field(rng, sub, 3 * scale)
    rim = "enhancing" if t["enhancing"] else "non-enhancing"
    for m in range(4):
        s = float(t["contrast"][m]) * texture
        core = w_necrosis * _SIGNAL["necrosis"][m] + (1 - w_necrosis) * _SIGNAL[rim][m]
        tumour = w_core * core * s + (w_signal - w_core) * _SIGNAL["oedema"][m] * s
        images[m][box] = (1 - w_signal) * images[m][box] + tumour
    label = np.where(w_tumour > 0.5, 1, 0)
    label = np.where(w_core > 0.5, 3 if t["enhancing"] else 2, label)
    label = np.where((w_core > 0.5) & (w_necrosis > 0.5), 2, label)
    code[box] = np.maximum(code[box], label.astype(np.uint8))


def _render_case(p: dict, shape: Sequence[int]) -> tuple[tuple[slice, ...], np.ndarray, np.ndarray, np.ndarray]:
    """Render one case on the box of ``shape`` that holds the brain (everything outside it is zero): the box, the
    ``(4, *B)`` float32 images (0 outside the brain), the ``B`` uint8 BraTS labels and the bool brain mask."""
    rng = np.random.default_rng(p["fields"])
    box = _box(p["centre"], p["semi"] * 1.15 + 2, shape)  # the brain's box: everything outside it is zero
    grids = [((np.arange(b.start, b.stop) - c) / s).astype(np.float32) for b, c, s in zip(box, p["centre"], p["semi"])]
    p = {**p, "centre_box": p["centre"] - np.array([b.start for b in box])}
    scale = float(np.mean(p["semi"])) / _FULL_SIZE_MM
    tissue = _tissues(p, grids, scale, rng)
    brain_shape = tissue["csf"].shape
    texture = 1 + 0.03 * _smooth_field(rng, brain_shape, 3 * scale)
    signal = {name: np.asarray(_SIGNAL[name]) * p["signal"][k] for k, name in enumerate(_TISSUES)}
    images = np.empty((4, *brain_shape), np.float32)
    for m in range(4):
        images[m] = sum(tissue[t] * float(signal[t][m]) for t in _TISSUES) * texture
    code = np.zeros(brain_shape, np.uint8)
    for t in p["tumours"]:
        _add_tumour(t, p, images, code, tissue, scale, rng)
    brain = tissue["brain"]
    noise = torch.Generator().manual_seed(int(rng.integers(2**62)))  # torch draws normals twice as fast as numpy
    for m in range(4):
        images[m] *= _bias(rng, brain_shape, p["bias"])
        images[m] += torch.randn(brain_shape, generator=noise).numpy() * float(p["noise"] * signal["wm"][m])
        images[m] *= brain  # skull-stripped: zero outside the brain
    labels = np.array([0, BRATS_LABELS["peritumoural oedema"], BRATS_LABELS["necrotic and non-enhancing tumour core"],
                       BRATS_LABELS["GD-enhancing tumour"]], np.uint8)  # fmt: skip
    return box, images, labels[code] * brain, brain


def _save(array: np.ndarray, path: Path) -> None:
    nib.save(nib.Nifti1Image(array, brats_affine(array.shape)), str(path))


def _write_case(folder: Path, p: dict, shape: Sequence[int], with_seg: bool, suffix: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    box, images, seg, brain = _render_case(p, shape)
    volume = np.zeros(tuple(shape), np.int16)
    for m, name in enumerate(BRATS_MODALITIES):
        scaled = np.clip(np.rint(images[m] * float(p["gain"][m])), 1, 32767)  # at least 1 inside the brain
        volume[box] = scaled.astype(np.int16) * brain
        _save(volume, folder / f"{folder.name}_{name}{suffix}")
    if with_seg:
        full = np.zeros(tuple(shape), np.uint8)
        full[box] = seg
        _save(full, folder / f"{folder.name}_seg{suffix}")


def _case_names(release: int, n_cases: int, n_validation: int, seed: int) -> tuple[list[str], list[str]]:
    """Training and validation case ids: 2020 numbers each set from 1, 2021 draws 5-digit ids with gaps from one
    sequence shared by both sets."""
    if release == 2020:
        return (
            [f"BraTS20_Training_{k:03d}" for k in range(1, n_cases + 1)],
            [f"BraTS20_Validation_{k:03d}" for k in range(1, n_validation + 1)],
        )
    rng = np.random.default_rng([seed, release])
    ids = np.cumsum(rng.integers(1, 4, size=n_cases + n_validation)) - 1
    validation = set(rng.choice(ids, size=n_validation, replace=False).tolist())
    return (
        [f"BraTS2021_{i:05d}" for i in ids if i not in validation],
        [f"BraTS2021_{i:05d}" for i in ids if i in validation],
    )


def _write_side_files(out: Path, training: list[str], validation: list[str], cases: dict[str, dict]) -> None:
    """The 2020 CSV side files: name_mapping.csv and survival_info.csv beside the training cases,
    survival_evaluation.csv beside the validation cases (synthetic ids and values)."""
    rows = []
    for name in training:
        number = name.rsplit("_", 1)[1]
        grade = "HGG" if cases[name]["tumours"][0]["enhancing"] else "LGG"
        rows.append(
            [grade, f"Brats17_SYN_{number}_1", f"Brats18_SYN_{number}_1", "NA", f"BraTS19_SYN_{number}_1", name]
        )
    with open(out / TRAINING_FOLDERS[2020] / "name_mapping.csv", "w", newline="") as f:
        csv.writer(f).writerows([NAME_MAPPING_COLUMNS, *rows])
    rows = []
    for name in training:
        p = cases[name]
        if p["tumours"][0]["enhancing"]:  # survival is given for high-grade cases
            rows.append([name, p["age"], p["survival_days"], p["resection"]])
    with open(out / TRAINING_FOLDERS[2020] / "survival_info.csv", "w", newline="") as f:
        csv.writer(f).writerows([SURVIVAL_INFO_COLUMNS, *rows])
    if validation:
        rows = [[name, cases[name]["age"], cases[name]["resection"]] for name in validation]
        with open(out / VALIDATION_FOLDERS[2020] / "survival_evaluation.csv", "w", newline="") as f:
            csv.writer(f).writerows([SURVIVAL_EVALUATION_COLUMNS, *rows])


def write_synthetic_brats(
    out: str | Path,
    n_cases: int = 24,
    shape: Sequence[int] = (240, 240, 155),
    seed: int = 0,
    release: int = 2020,
    n_validation: int = 4,
    compress: bool = True,
) -> Path:
    """Write a synthetic BraTS copy in the distributed layout; equal arguments give identical files.

    ``n_cases`` training cases (with ``seg``) go to ``out/<training folder>/`` and ``n_validation`` cases (without)
    to ``out/<validation folder>/`` (:data:`TRAINING_FOLDERS`, :data:`VALIDATION_FOLDERS`; e.g.
    ``MICCAI_BraTS2020_TrainingData``), named as the release names them (2020: ``BraTS20_Training_001``,
    ``BraTS20_Validation_001``; 2021: 5-digit ids with gaps, ``BraTS2021_00000``), with ``.nii.gz`` files or ``.nii``
    if not ``compress``. Images are int16 (0 outside the brain), ``seg`` uint8 in {0, 1, 2, 4}, all ``shape`` with the
    1 mm affine of the release (:func:`brats_affine`); the anatomy is scaled to the shape (real size at the release's
    240x240x155). For 2020, ``name_mapping.csv`` and ``survival_info.csv`` lie beside the training cases and
    ``survival_evaluation.csv`` beside the validation cases. Each case has its own brain shape, ventricle size,
    contrast, gain, bias field and noise, and one or two tumours (position, size, shape, oedema extent and necrosis of
    their own; a fifth of the cases lower-grade-like, without enhancing tumour). Returns ``out``.
    """
    shape = tuple(int(s) for s in shape)
    if release not in TRAINING_FOLDERS:
        raise ValueError(f"release: expected 2020 or 2021, found {release}")
    if n_cases < 1 or n_validation < 0 or len(shape) != 3 or min(shape) < 16:
        raise ValueError(
            f"write_synthetic_brats: expected n_cases >= 1, n_validation >= 0 and a 3D shape of at least 16 voxels "
            f"per axis, found {n_cases}, {n_validation}, {shape}"
        )
    out = Path(out)
    t0 = time.perf_counter()
    training, validation = _case_names(release, n_cases, n_validation, seed)
    jobs = [(0, name) for name in training] + [(1, name) for name in validation]
    cases = {}
    for subset, name in tqdm(jobs, desc="synthetic BraTS", disable=None):
        number = int(name.rsplit("_", 1)[1])
        rng = np.random.default_rng([seed, release, subset, number])  # per case: a case does not depend on the others
        cases[name] = _draw_case(rng, shape)
        folder = out / (VALIDATION_FOLDERS if subset else TRAINING_FOLDERS)[release] / name
        _write_case(folder, cases[name], shape, with_seg=not subset, suffix=".nii.gz" if compress else ".nii")
    if release == 2020:
        _write_side_files(out, training, validation, cases)
    seconds = time.perf_counter() - t0
    logger.info("wrote %d synthetic BraTS %d cases %s to %s in %.1f s", len(jobs), release, shape, out, seconds)
    return out


if __name__ == "__main__":
    import fire

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    fire.Fire(write_synthetic_brats)  # a smaller size is given as --shape 96,96,64
