"""LGG FLAIR (TCGA, kaggle_3m): loader for the released layout and patient-level splits.

Layout (``<dataset_dir>/kaggle_3m/`` or ``<dataset_dir>`` itself): one folder per patient,
``TCGA_CS_4941_19960909/TCGA_CS_4941_19960909_<n>.tif`` (256x256 RGB: pre-contrast, FLAIR, post-contrast) with
``..._<n>_mask.tif`` (256x256, 0 background / 255 tumour) beside it, and ``data.csv`` (one row per patient id, e.g.
``TCGA_CS_4941``, without the date suffix of the folder). Slices are ordered by ``<n>`` as a number."""

from __future__ import annotations

import csv
import logging
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tifffile
from monai.config import NdarrayOrTensor
from monai.transforms import ScaleIntensityRangePercentiles
from tqdm import tqdm

from common.data.splits import train_val_test_split

__all__ = [
    "CHANNELS",
    "DATA_CSV_COLUMNS",
    "MASK_VALUES",
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
]

logger = logging.getLogger(__name__)

CHANNELS = ("pre-contrast", "FLAIR", "post-contrast")


DATA_CSV_COLUMNS = (
    "Patient", "RNASeqCluster", "MethylationCluster", "miRNACluster", "CNCluster", "RPPACluster", "OncosinoCluster",
    "COCCluster", "histological_type", "neoplasm_histologic_grade", "tumor_tissue_site", "laterality",
    "tumor_location", "gender", "age_at_initial_pathologic", "race", "ethnicity", "death01",
)  # fmt: skip


_SPLITS = ("train", "val", "test")


MASK_VALUES = (0, 255)


GENERATE_HINT = (
    "generate the synthetic copy with `python -m common.synthetic.lgg --out data/lgg`, or point --dataset_dir at the "
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
    dataset_dir: str | Path,
    split: str,
    num_folds: int = 5,
    fold: int = 0,
    seed: int = 0,
    masks: bool = True,
    val_fraction: float = 0.2,
) -> list[LggPatient]:
    """Patients of one split, by patient id (:func:`~common.data.train_val_test_split`, seeded by ``seed``).

    ``test`` is fold ``fold`` of ``num_folds`` (held out: only evaluation reports on it); of the other patients,
    ``val`` is ``max(1, round(val_fraction * n))`` (model selection: the best epoch) and ``train`` the rest. ``all``
    is every patient. A patient id (all its dated folders) is never in two of train / val / test, and over the
    ``num_folds`` folds every patient is tested exactly once.
    """
    patients = find_lgg_patients(dataset_dir, masks)
    if split == "all":
        return patients
    if split not in _SPLITS:
        raise ValueError(f"split: expected one of train, val, test or all, found '{split}'")
    ids = sorted({p.id for p in patients})
    keep = set(train_val_test_split(ids, num_folds, fold, seed, val_fraction)[_SPLITS.index(split)])
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


def _check_values(
    image: np.ndarray | None, mask: np.ndarray | None, s: LggSlice, problems: list[str], zero_one: list[Path]
) -> bool:
    """Append a problem for non-finite image values or mask values other than 0/255 (and the mask to ``zero_one`` if
    it holds 0/1 only); True if the slice is usable."""
    ok = True
    if image is not None and image.dtype.kind == "f" and not np.isfinite(image).all():
        problems.append(f"{s.image}: expected finite intensities, found {int((~np.isfinite(image)).sum())} NaN/inf")
        ok = False
    if mask is not None:
        values = np.unique(mask)
        if not np.isin(values, MASK_VALUES).all():
            shown = ", ".join(f"{v:g}" for v in values[:8].tolist()) + (", ..." if values.size > 8 else "")
            problems.append(f"{s.mask}: expected mask values 0 and 255 (kaggle_3m), found {shown} ({mask.dtype})")
            if np.isin(values, (0, 1)).all():
                zero_one.append(s.mask)
            ok = False
    return ok


def load_lgg_volumes(
    patients: Sequence[LggPatient], image_size: int = 256, lower: float = 10.0, upper: float = 99.0
) -> list[dict]:
    """Read every slice of ``patients`` into per-patient volumes, checking every file before returning.

    Returns one dict per patient: ``image`` float32 ``(3, S, S, D)`` (channels pre-contrast, FLAIR, post-contrast,
    each scaled by :func:`scale_percentiles` over the patient), ``label`` uint8 ``(1, S, S, D)`` in {0, 1} (only if
    the patients have masks), ``patient`` (folder name), ``slices`` int64 ``(D,)`` (the slice numbers, in stack
    order). Images must be ``(S, S, 3)`` with finite values and masks ``(S, S)`` holding only the kaggle_3m values
    0 (background) and 255 (tumour): 255 becomes label 1. A mask with any other value (0/1, 0/1/2, a smoothed edge)
    is refused, not thresholded, so no label is lost or invented silently; a copy stored as 0/1 must be converted
    (``mask * 255``) first. Every unreadable, empty, mis-shaped or mis-valued file is reported in one ``ValueError``.
    """
    if not patients:
        raise ValueError("load_lgg_volumes: expected at least one patient, found none")
    problems: list[str] = []
    zero_one: list[Path] = []
    items = []
    for patient in tqdm(patients, desc="LGG patients", disable=None):
        images, labels = [], []
        for s in patient.slices:
            image = _read_tif(
                s.image, (image_size, image_size, 3), "an RGB slice (pre-contrast, FLAIR, post-contrast)", problems
            )
            mask = None
            if s.mask is not None:
                mask = _read_tif(s.mask, (image_size, image_size), "a single-channel 0/255 mask", problems)
            if not _check_values(image, mask, s, problems, zero_one):
                image = mask = None
            images.append(image)
            if s.mask is not None:
                labels.append(mask)
        if problems or any(a is None for a in images + labels):
            continue  # keep checking the other patients, but build nothing once a problem is known
        volume = np.stack(images, axis=-1).transpose(2, 0, 1, 3).astype(np.float32)  # (S, S, 3, D) -> (3, S, S, D)
        item = {
            "image": np.asarray(scale_percentiles(volume, lower, upper), dtype=np.float32),
            "patient": patient.name,
            "slices": np.array([s.number for s in patient.slices], dtype=np.int64),
        }
        if labels:
            item["label"] = (np.stack(labels, axis=-1) == MASK_VALUES[1]).astype(np.uint8)[None]
        items.append(item)
    if problems:
        raise ValueError(
            f"LGG data: {len(problems)} bad files (unreadable, mis-shaped or with unexpected values):\n  "
            + "\n  ".join(problems[:20])
            + (f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else "")
            + (
                f"\nHint: {len(zero_one)} masks hold 0/1, not the kaggle_3m 0/255; if the copy stores every mask as "
                "0/1, convert it (mask * 255) rather than have 1 read as background"
                if zero_one
                else ""
            )
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
    val_fraction: float = 0.2,
) -> list[dict]:
    """:func:`lgg_patients` then :func:`load_lgg_volumes`: the per-patient volume dicts of one split (see those)."""
    patients = lgg_patients(dataset_dir, split, num_folds, fold, seed, masks, val_fraction)
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
    dataset_dir: str | Path,
    split: str,
    num_folds: int = 5,
    fold: int = 0,
    seed: int = 0,
    image_size: int = 256,
    val_fraction: float = 0.2,
) -> list[dict]:
    """The 2D slices of :func:`lgg_volumes` (scaled per patient first): one dict per slice with ``image`` float32
    ``(3, S, S)``, ``label`` uint8 ``(1, S, S)`` in {0, 1}, ``patient`` and ``slice`` (its number)."""
    items = []
    for v in lgg_volumes(dataset_dir, split, num_folds, fold, seed, image_size, val_fraction=val_fraction):
        for k, number in enumerate(v["slices"].tolist()):
            items.append({
                "image": np.ascontiguousarray(v["image"][..., k]),
                "label": np.ascontiguousarray(v["label"][..., k]),
                "patient": v["patient"],
                "slice": number,
            })  # fmt: skip
    return items
