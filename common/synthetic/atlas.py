"""Seeded synthetic ATLAS (stroke lesions on T1w MRI) in the R2.0 layout (or R1.2), built on a real brain: nilearn's
MNI152 2009 T1 template, which ships inside the nilearn package (no download), on the ATLAS grid (197x233x189 at 1 mm).

Per subject: a smooth random deformation of the template, a gamma / gain change, a smooth multiplicative bias field
and noise; one to four stroke-like lesions, T1-hypointense, centred in a vascular territory (cortical middle / anterior
/ posterior cerebral artery territories, or subcortical: basal ganglia and internal capsule), of irregular shape
(an ellipsoid whose surface is perturbed by smooth noise), from a few hundred to tens of thousands of voxels at 1 mm,
with partial-volume edges (the image darkens smoothly; the mask is the voxels more than half lesion).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage
from tqdm import tqdm

from common.data.atlas import ATLAS_SHAPE

__all__ = ["R20_FOLDER", "load_template", "write_synthetic_atlas"]

logger = logging.getLogger(__name__)

R20_FOLDER = "ATLAS_2"  # the folder R2.0 unpacks as; it holds Training/ (and Testing/)

SPACE = "MNI152NLin2009aSym"

# Lesion centres in MNI mm (x: right +, y: anterior +, z: superior +), per territory: (centre, spread) of a normal.
# |x| is drawn on one side; the side is drawn separately.
_TERRITORIES = {
    "MCA cortical": ((45.0, -10.0, 15.0), (8.0, 20.0, 12.0)),
    "ACA cortical": ((8.0, 20.0, 45.0), (4.0, 15.0, 8.0)),
    "PCA cortical": ((20.0, -75.0, 5.0), (8.0, 8.0, 8.0)),
    "subcortical": ((22.0, 2.0, 5.0), (5.0, 8.0, 6.0)),
}
_TERRITORY_P = (0.45, 0.1, 0.15, 0.3)


def load_template(voxel_size: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """nilearn's MNI152 2009 T1 template (1 mm, 197x233x189, values in [0, 1]) and its affine, resampled to
    ``voxel_size`` mm (linear interpolation; the shape is ``round(197 / voxel_size)``, ...) when it is not 1."""
    from nilearn.datasets import load_mni152_template  # the template is a file inside the package

    img = load_mni152_template(resolution=1)
    data = np.asarray(img.get_fdata(), dtype=np.float32)
    affine = np.asarray(img.affine, dtype=np.float64)
    if data.shape != ATLAS_SHAPE:
        raise RuntimeError(f"nilearn MNI152 template: expected shape {ATLAS_SHAPE}, found {data.shape}")
    if voxel_size != 1:
        shape = tuple(max(8, round(s / voxel_size)) for s in data.shape)
        data = ndimage.zoom(data, [n / s for n, s in zip(shape, data.shape)], order=1).astype(np.float32)
        affine = affine.copy()
        affine[:3, :3] *= voxel_size
    return data, affine


def _smooth(rng: np.random.Generator, shape: Sequence[int], cell: int) -> np.ndarray:
    """A smooth random field of about unit spread: normal noise on a grid of ``cell`` voxels, smoothed there and
    upsampled linearly (a cubic spline at full size costs minutes at 1 mm)."""
    coarse = rng.standard_normal([max(2, int(np.ceil(s / cell)) + 1) for s in shape]).astype(np.float32)
    coarse = ndimage.gaussian_filter(coarse, 0.7, mode="nearest")
    coarse /= max(float(coarse.std()), 1e-6)
    field = ndimage.zoom(coarse, [s / c for s, c in zip(shape, coarse.shape)], order=1)
    return field[tuple(slice(0, s) for s in shape)]


def _lesions(rng: np.random.Generator, brain: np.ndarray, affine: np.ndarray, voxel_size: float) -> list[np.ndarray]:
    """1-4 soft lesion maps in [0, 1] (partial volume at the edge), each inside the brain (computed in its box)."""
    shape = np.array(brain.shape)
    inverse = np.linalg.inv(affine)
    out = []
    for _ in range(int(rng.choice([1, 1, 2, 2, 3, 4]))):
        territory = rng.choice(len(_TERRITORIES), p=_TERRITORY_P)
        (cx, cy, cz), (sx, sy, sz) = list(_TERRITORIES.values())[territory]
        side = rng.choice([-1.0, 1.0])
        centre = np.array([side * abs(rng.normal(cx, sx)), rng.normal(cy, sy), rng.normal(cz, sz)])
        # radii in mm: log-uniform, so volumes range from a few hundred voxels to tens of thousands at 1 mm
        radius = float(np.exp(rng.uniform(np.log(4.0), np.log(20.0))))
        radii = radius * rng.uniform(0.6, 1.4, size=3)
        rot = np.linalg.qr(rng.standard_normal((3, 3)))[0]
        # the box that holds the lesion with its rough edge (1.6 x the largest radius), in voxels
        centre_vox = inverse[:3, :3] @ centre + inverse[:3, 3]
        half = 1.6 * radii.max() / voxel_size + 2
        lo = np.clip(np.floor(centre_vox - half), 0, shape).astype(int)
        hi = np.clip(np.ceil(centre_vox + half) + 1, 0, shape).astype(int)
        box_shape = hi - lo
        if np.any(box_shape < 2):
            continue
        ijk = np.meshgrid(*[np.arange(a, b, dtype=np.float32) for a, b in zip(lo, hi)], indexing="ij", sparse=True)
        d = [
            sum(np.float32(affine[r, c]) * ijk[c] for c in range(3)) + np.float32(affine[r, 3] - centre[r])
            for r in range(3)
        ]
        r2 = sum((sum(np.float32(rot[j, k]) * d[k] for k in range(3)) / np.float32(radii[j])) ** 2 for j in range(3))
        rough = 0.35 * _smooth(rng, box_shape, max(2, round(6 / voxel_size)))
        level = 1.0 - np.sqrt(r2) + rough  # > 0 inside the lesion
        width = 1.2 / radius  # partial-volume band of about one voxel at 1 mm
        box = tuple(slice(a, b) for a, b in zip(lo, hi))
        soft_box = np.clip(0.5 + level / width, 0.0, 1.0) * brain[box]
        if soft_box.max() > 0.5:
            soft = np.zeros(brain.shape, np.float32)
            soft[box] = soft_box
            out.append(soft)
    return out


def _subject(
    rng: np.random.Generator, template: np.ndarray, affine: np.ndarray, voxel_size: float
) -> tuple[np.ndarray, list[np.ndarray]]:
    """One subject: (T1w image, lesion masks as 0/1 uint8, one per lesion)."""
    shape = template.shape
    amplitude = 2.5 / voxel_size  # voxels
    cell = max(2, round(24 / voxel_size))
    grid = np.meshgrid(*[np.arange(s, dtype=np.float32) for s in shape], indexing="ij")
    coords = [g + amplitude * _smooth(rng, shape, cell) for g in grid]
    image = ndimage.map_coordinates(template, coords, order=1, mode="constant", cval=0.0).astype(np.float32)
    brain = ndimage.binary_fill_holes(image > 0.25).astype(np.float32)
    lesions = _lesions(rng, brain, affine, voxel_size)
    for soft in lesions:  # T1-hypointense: the tissue darkens towards a CSF-like value
        image = image * (1 - soft) + soft * rng.uniform(0.08, 0.2)
    image = np.clip(image, 0, None) ** rng.uniform(0.85, 1.15)
    bias = np.exp(0.15 * _smooth(rng, shape, max(2, round(60 / voxel_size))))
    image = image * bias * rng.uniform(600, 1000)
    image = image + rng.normal(0, rng.uniform(5, 15), size=shape).astype(np.float32) * (image > 0)
    masks = [(soft > 0.5).astype(np.uint8) for soft in lesions]
    return np.clip(np.round(image), 0, 32767).astype(np.int16), [m for m in masks if m.any()]


def _save(array: np.ndarray, affine: np.ndarray, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = nib.Nifti1Image(array, affine)
    img.header.set_xyzt_units("mm")
    nib.save(img, str(path))


def _write_r20(out: Path, subset: str, cohort: int, number: int, image, masks, affine) -> None:
    sub = f"sub-r{cohort:03d}s{number:03d}"
    anat = out / R20_FOLDER / subset / f"R{cohort:03d}" / sub / "ses-1" / "anat"
    _save(image, affine, anat / f"{sub}_ses-1_space-{SPACE}_T1w.nii.gz")
    if masks is not None:
        merged = np.max(np.stack(masks), 0) if masks else np.zeros(image.shape, np.uint8)
        _save(merged, affine, anat / f"{sub}_ses-1_space-{SPACE}_label-L_desc-T1lesion_mask.nii.gz")
    description = out / R20_FOLDER / subset / f"R{cohort:03d}" / "dataset_description.json"
    if not description.exists():
        description.write_text(
            json.dumps({"Name": f"ATLAS R2.0 (synthetic) cohort R{cohort:03d}", "BIDSVersion": "1.6.0"})
        )


def _write_r12(out: Path, site: int, number: int, image, masks, affine, rng: np.random.Generator) -> None:
    sid = f"{31768 + 7 * number:06d}"
    folder = out / f"Site{site}" / sid / "t01"
    _save(image, affine, folder / f"{sid}_t1w_deface_stx.nii.gz")
    scale = 255 if rng.random() < 0.5 else 1  # R1.2 copies store masks as 0/1 or 0/255
    if len(masks) == 1:
        _save(masks[0] * np.uint8(scale), affine, folder / f"{sid}_LesionSmooth_stx.nii.gz")
    else:  # one numbered file per lesion
        for k, m in enumerate(masks, 1):
            _save(m * np.uint8(scale), affine, folder / f"{sid}_LesionSmooth_{k}_stx.nii.gz")


def write_synthetic_atlas(
    out: str | Path,
    n_subjects: int = 20,
    n_testing: int = 0,
    voxel_size: float = 1.0,
    seed: int = 0,
    release: str = "R2.0",
    subjects_per_cohort: int = 5,
) -> Path:
    """Write a seeded synthetic ATLAS copy under ``out``; returns the dataset folder to give as ``dataset_dir``.

    ``release="R2.0"``: ``out/ATLAS_2/Training/R001/sub-r001s001/ses-1/anat/sub-r001s001_ses-1_space-
    MNI152NLin2009aSym_{T1w,label-L_desc-T1lesion_mask}.nii.gz`` (``subjects_per_cohort`` subjects per cohort folder,
    each with a ``dataset_description.json``), and ``n_testing`` subjects under ``Testing/`` (T1w only); returns
    ``out/ATLAS_2``. ``release="R1.2"``: ``out/Site<k>/<id>/t01/<id>_t1w_deface_stx.nii.gz`` with one
    ``<id>_LesionSmooth_stx.nii.gz`` or, for subjects with several lesions, one ``<id>_LesionSmooth_<n>_stx.nii.gz``
    per lesion, masks stored as 0/1 or 0/255 (drawn per subject); returns ``out``. Images are int16 on the template's
    grid at ``voxel_size`` mm (1: the ATLAS grid 197x233x189; 2: 98x116x94; 8: 25x29x24 for tests). Every subject has
    at least one lesion (a draw with none left after masking is redrawn). Each subject depends on ``seed`` and its
    number only.
    """
    if release not in ("R2.0", "R1.2"):
        raise ValueError(f"release: expected 'R2.0' or 'R1.2', found {release!r}")
    if n_subjects < 1 or n_testing < 0 or voxel_size <= 0 or subjects_per_cohort < 1:
        raise ValueError(
            "write_synthetic_atlas: expected n_subjects >= 1, n_testing >= 0, voxel_size > 0, subjects_per_cohort >= 1,"
            f" found {n_subjects}, {n_testing}, {voxel_size}, {subjects_per_cohort}"
        )
    if release == "R1.2" and n_testing:
        raise ValueError("n_testing: ATLAS R1.2 has no Testing folder; expected 0")
    out = Path(out)
    t0 = time.perf_counter()
    template, affine = load_template(voxel_size)
    jobs = [("Training", k) for k in range(1, n_subjects + 1)] + [("Testing", k) for k in range(1, n_testing + 1)]
    for subset, k in tqdm(jobs, desc="synthetic ATLAS", disable=None):
        rng = np.random.default_rng([seed, int(subset == "Testing"), k])
        image, masks = _subject(rng, template, affine, voxel_size)
        while not masks:
            image, masks = _subject(rng, template, affine, voxel_size)
        cohort = (k - 1) // subjects_per_cohort + 1 + (100 if subset == "Testing" else 0)
        if release == "R2.0":
            _write_r20(out, subset, cohort, k, image, masks if subset == "Training" else None, affine)
        else:
            _write_r12(out, cohort, k, image, masks, affine, rng)
    logger.info(
        "wrote %d synthetic ATLAS %s subjects %s to %s in %.1f s",
        len(jobs),
        release,
        template.shape,
        out,
        time.perf_counter() - t0,
    )
    return out / R20_FOLDER if release == "R2.0" else out


if __name__ == "__main__":
    import fire

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    fire.Fire(write_synthetic_atlas)  # a CPU demo size: --voxel_size 2
