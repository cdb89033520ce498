"""LGG FLAIR (TCGA, kaggle_3m): loader for the released layout, patient-level splits, mask writer, synthetic writer.

Layout (``<dataset_dir>/kaggle_3m/`` or ``<dataset_dir>`` itself): one folder per patient,
``TCGA_CS_4941_19960909/TCGA_CS_4941_19960909_<n>.tif`` (256x256 RGB: pre-contrast, FLAIR, post-contrast) with
``..._<n>_mask.tif`` (256x256, 0 background / 255 tumour) beside it, and ``data.csv`` (one row per patient id, e.g.
``TCGA_CS_4941``, without the date suffix of the folder). Slices are ordered by ``<n>`` as a number.
"""

from __future__ import annotations

import csv
import logging
import re
import time
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import tifffile
import torch
from monai.config import KeysCollection, NdarrayOrTensor
from monai.transforms import MapTransform, ScaleIntensityRangePercentiles, Transform
from scipy import ndimage
from tqdm import tqdm

from common.data.splits import kfold_split

__all__ = [
    "CHANNELS",
    "DATA_CSV_COLUMNS",
    "LggSlice",
    "LggPatient",
    "patient_id",
    "read_data_csv",
    "find_lgg_patients",
    "lgg_patients",
    "scale_percentiles",
    "load_lgg_volumes",
    "lgg_volumes",
    "lgg_slices",
    "SaveLggMasks",
    "SaveLggMasksd",
    "write_synthetic_lgg",
]

logger = logging.getLogger(__name__)

CHANNELS = ("pre-contrast", "FLAIR", "post-contrast")
DATA_CSV_COLUMNS = (
    "Patient", "RNASeqCluster", "MethylationCluster", "miRNACluster", "CNCluster", "RPPACluster", "OncosinoCluster",
    "COCCluster", "histological_type", "neoplasm_histologic_grade", "tumor_tissue_site", "laterality",
    "tumor_location", "gender", "age_at_initial_pathologic", "race", "ethnicity", "death01",
)  # fmt: skip
GENERATE_HINT = (
    "generate the synthetic copy with `python -m common.data.lgg --out data/lgg`, or point --dataset_dir at the "
    "unpacked Kaggle 'lgg-mri-segmentation' folder (the one holding kaggle_3m/) or at kaggle_3m/ itself"
)
_SLICE_NAME = re.compile(r"^(?P<stem>.+)_(?P<number>\d+)(?P<mask>_mask)?\.tif$")
_PATIENT_ID = re.compile(r"^(TCGA_[A-Za-z0-9]{2}_[A-Za-z0-9]{4})(_\d{8})?$")


@dataclass(frozen=True)
class LggSlice:
    """One axial slice: its number in the patient's stack, the RGB image and (if present) the mask file."""

    number: int
    image: Path
    mask: Path | None


@dataclass(frozen=True)
class LggPatient:
    """One patient folder (``name`` is the folder name) with its slices in slice-number order."""

    name: str
    folder: Path
    slices: tuple[LggSlice, ...]

    @property
    def id(self) -> str:
        """The patient id the splits group by (``TCGA_CS_4941`` for ``TCGA_CS_4941_19960909``)."""
        return patient_id(self.name)


def patient_id(folder_name: str) -> str:
    """``TCGA_XX_NNNN`` from a kaggle_3m folder name (the date suffix dropped); other names are returned as is."""
    match = _PATIENT_ID.match(folder_name)
    return match.group(1) if match else folder_name


def read_data_csv(path: str | Path) -> dict[str, dict[str, str]]:
    """Rows of a kaggle_3m ``data.csv`` by ``Patient`` id (all values as strings)."""
    path = Path(path)
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames is None or "Patient" not in reader.fieldnames:
            raise ValueError(f"{path}: expected a header with a 'Patient' column, found {reader.fieldnames}")
        return {row["Patient"]: row for row in reader}


def _patient_folders(root: Path) -> list[Path]:
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not folders and any(root.glob("*.tif")):  # a single patient's folder of slices (inference)
        return [root]
    return folders


def _scan_folder(folder: Path, masks: bool, problems: list[str]) -> LggPatient:
    images: dict[int, Path] = {}
    mask_files: dict[int, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.suffix.lower() not in (".tif", ".tiff") or path.name.startswith("."):
            continue
        match = _SLICE_NAME.match(path.name)
        if match is None:
            problems.append(
                f"{path}: expected a name <patient>_<n>.tif or <patient>_<n>_mask.tif, found " f"'{path.name}'"
            )
            continue
        (mask_files if match["mask"] else images)[int(match["number"])] = path
    if not images:
        problems.append(f"{folder}: expected slices <patient>_<n>.tif in the patient folder, found none")
    if masks:
        problems += [
            f"{images[n]}: expected its mask {images[n].name[:-4]}_mask.tif beside it, found none"
            for n in sorted(images)
            if n not in mask_files
        ]
        problems += [
            f"{mask_files[n]}: expected its image {mask_files[n].name[:-9]}.tif beside it, found none"
            for n in sorted(mask_files)
            if n not in images
        ]
    slices = tuple(LggSlice(n, images[n], mask_files.get(n) if masks else None) for n in sorted(images))
    return LggPatient(folder.name, folder, slices)


def find_lgg_patients(dataset_dir: str | Path, masks: bool = True) -> list[LggPatient]:
    """List the patient folders of a kaggle_3m-layout data set, checking the layout (not the image content).

    ``dataset_dir`` may hold ``kaggle_3m/``, be ``kaggle_3m/`` itself, or (for inference) be one patient's folder of
    slices. With ``masks`` every slice needs its ``_mask.tif`` (and every mask its slice); without, masks are
    ignored. Every problem found (a folder with no slices, a slice without its mask, a misnamed tif) is reported in one
    ``FileNotFoundError``. A missing ``data.csv`` or a patient without a row in it is only logged.
    """
    root = Path(dataset_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: expected a kaggle_3m data set folder, found no such folder; {GENERATE_HINT}")
    if (root / "kaggle_3m").is_dir():
        root = root / "kaggle_3m"
    folders = _patient_folders(root)
    if not folders:
        raise FileNotFoundError(
            f"{root}: expected patient folders (TCGA_XX_NNNN_YYYYMMDD/), found none; " f"{GENERATE_HINT}"
        )
    problems: list[str] = []
    patients = [_scan_folder(folder, masks, problems) for folder in folders]
    if problems:
        raise FileNotFoundError(
            f"{root}: not a kaggle_3m-layout data set ({len(problems)} problems):\n  "
            + "\n  ".join(problems[:20])
            + (f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else "")
            + f"\nHint: {GENERATE_HINT}"
        )
    table = root / "data.csv"
    if folders != [root]:
        if not table.is_file():
            logger.warning("%s: expected the kaggle_3m patient table beside the patient folders, found none", table)
        else:
            missing = sorted({p.id for p in patients} - set(read_data_csv(table)))
            if missing:
                logger.warning(
                    "%s: no row for %d patients (%s); splits do not need it",
                    table,
                    len(missing),
                    ", ".join(missing[:5]),
                )
    return patients


def lgg_patients(
    dataset_dir: str | Path, split: str, num_folds: int = 5, fold: int = 0, seed: int = 0, masks: bool = True
) -> list[LggPatient]:
    """Patients of one split: ``train`` / ``val`` are fold ``fold`` of a seeded ``num_folds``-fold split by patient id
    (:func:`~common.data.splits.kfold_split`), ``all`` is every patient. A patient is never in two splits."""
    patients = find_lgg_patients(dataset_dir, masks)
    if split == "all":
        return patients
    if split not in ("train", "val"):
        raise ValueError(f"split: expected train, val or all, found '{split}'")
    ids = sorted({p.id for p in patients})
    train, val = kfold_split(ids, num_folds, fold, seed)
    keep = set(train if split == "train" else val)
    return [p for p in patients if p.id in keep]


def _read_tif(path: Path, shape: tuple[int, ...], what: str, problems: list[str]) -> np.ndarray | None:
    try:
        if path.stat().st_size == 0:
            problems.append(f"{path}: expected {what}, found an empty file (0 bytes)")
            return None
        array = tifffile.imread(path)
    except Exception as e:  # tifffile raises several types for truncated or non-TIFF content
        problems.append(f"{path}: expected {what}, found unreadable content ({type(e).__name__}: {e})")
        return None
    if array.shape != shape:
        problems.append(f"{path}: expected {what} of shape {shape}, found shape {array.shape} ({array.dtype})")
        return None
    return array


def scale_percentiles(image: NdarrayOrTensor, lower: float = 10.0, upper: float = 99.0) -> NdarrayOrTensor:
    """Map each channel's ``[lower, upper]`` percentiles (over all its voxels) to ``[0, 1]``, clipping outside.

    Shapes: ``(C, *S)`` -> float32 ``(C, *S)`` in ``[0, 1]`` (same type). Applied to a whole patient ``(C, H, W, D)``
    it is the per-patient, per-channel scaling of the LGG set-up. A constant channel maps to zeros.
    """
    return ScaleIntensityRangePercentiles(lower, upper, b_min=0.0, b_max=1.0, clip=True, channel_wise=True)(image)


def load_lgg_volumes(
    patients: Sequence[LggPatient], image_size: int = 256, lower: float = 10.0, upper: float = 99.0
) -> list[dict]:
    """Read every slice of ``patients`` into per-patient volumes, checking every file before returning.

    Returns one dict per patient: ``image`` float32 ``(3, S, S, D)`` (channels pre-contrast, FLAIR, post-contrast,
    each scaled by :func:`scale_percentiles` over the patient), ``label`` uint8 ``(1, S, S, D)`` in {0, 1} (only if
    the patients have masks), ``patient`` (folder name), ``slices`` int64 ``(D,)`` (the slice numbers, in stack
    order). Images must be ``(S, S, 3)`` and masks ``(S, S)``; every unreadable, empty or mis-shaped file is
    reported in one ``ValueError``.
    """
    if not patients:
        raise ValueError("load_lgg_volumes: expected at least one patient, found none")
    problems: list[str] = []
    items = []
    for patient in tqdm(patients, desc="LGG patients", disable=None):
        images, labels = [], []
        for s in patient.slices:
            image = _read_tif(
                s.image, (image_size, image_size, 3), "an RGB slice (pre-contrast, FLAIR, post-contrast)", problems
            )
            images.append(image)
            if s.mask is not None:
                mask = _read_tif(s.mask, (image_size, image_size), "a single-channel 0/255 mask", problems)
                if mask is not None and not np.isin(mask, (0, 255)).all():
                    logger.warning(
                        "%s: expected mask values 0 and 255, found also %s; thresholded at 128",
                        s.mask,
                        np.setdiff1d(np.unique(mask), (0, 255))[:5].tolist(),
                    )
                labels.append(mask)
        if any(a is None for a in images + labels):
            continue
        volume = np.stack(images, axis=-1).transpose(2, 0, 1, 3).astype(np.float32)  # (S, S, 3, D) -> (3, S, S, D)
        item = {
            "image": np.asarray(scale_percentiles(volume, lower, upper), dtype=np.float32),
            "patient": patient.name,
            "slices": np.array([s.number for s in patient.slices], dtype=np.int64),
        }
        if labels:
            item["label"] = (np.stack(labels, axis=-1) >= 128).astype(np.uint8)[None]
        items.append(item)
    if problems:
        raise ValueError(
            f"LGG data: {len(problems)} unreadable or mis-shaped files:\n  "
            + "\n  ".join(problems[:20])
            + (f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else "")
        )
    return items


def lgg_volumes(
    dataset_dir: str | Path,
    split: str,
    num_folds: int = 5,
    fold: int = 0,
    seed: int = 0,
    image_size: int = 256,
    masks: bool = True,
) -> list[dict]:
    """:func:`lgg_patients` then :func:`load_lgg_volumes`: the per-patient volume dicts of one split (see those)."""
    patients = lgg_patients(dataset_dir, split, num_folds, fold, seed, masks)
    t0 = time.perf_counter()
    items = load_lgg_volumes(patients, image_size)
    logger.info(
        "LGG %s: %d patients, %d slices in %.1f s",
        split,
        len(items),
        sum(len(p.slices) for p in patients),
        time.perf_counter() - t0,
    )
    return items


def lgg_slices(
    dataset_dir: str | Path, split: str, num_folds: int = 5, fold: int = 0, seed: int = 0, image_size: int = 256
) -> list[dict]:
    """The 2D slices of :func:`lgg_volumes` (scaled per patient first): one dict per slice with ``image`` float32
    ``(3, S, S)``, ``label`` uint8 ``(1, S, S)`` in {0, 1}, ``patient`` and ``slice`` (its number)."""
    items = []
    for v in lgg_volumes(dataset_dir, split, num_folds, fold, seed, image_size):
        for k, number in enumerate(v["slices"].tolist()):
            items.append({
                "image": np.ascontiguousarray(v["image"][..., k]),
                "label": np.ascontiguousarray(v["label"][..., k]),
                "patient": v["patient"],
                "slice": number,
            })  # fmt: skip
    return items


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


# ----------------------------------------------------------------------------------------------------------------
# Synthetic kaggle_3m: axial brain slices (scalp, skull, cortex, white matter, ventricles) with a FLAIR-hyperintense
# lesion spanning part of the stack; many slices have no tumour.

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
        masks[k] = lesion.astype(np.uint8) * 255
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
