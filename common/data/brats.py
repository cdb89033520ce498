"""BraTS 2020 / 2021 gliomas: layout check, header check, decathlon-style datalist with patient-level folds, and the
label-to-region transform.

Layout (``<dataset_dir>`` is the folder that holds the case folders): ``BraTS20_Training_001/BraTS20_Training_001_
{flair,t1,t1ce,t2,seg}.nii.gz`` (2020) or ``BraTS2021_00000/BraTS2021_00000_{...}.nii.gz`` (2021; ids 5-digit, not
contiguous), compressed or not; validation folders have no ``seg``. In 2020 the segmentation of case 355 is named
``W39_1998.09.19_Segm.nii``. Side files (``name_mapping.csv``, ``survival_info.csv``, ...) and any other non-NIfTI file
are ignored. Every case is one patient (one pre-operative scan each), so folds split by case id. Labels: 0 background,
1 necrotic and non-enhancing tumour core, 2 peritumoural oedema, 4 GD-enhancing tumour; regions: whole tumour (WT) =
1+2+4, tumour core (TC) = 1+4, enhancing tumour (ET) = 4. Images are read by MONAI (``LoadImaged``) from the datalist.
"""

from __future__ import annotations

import logging
import re
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

from common.data.datalist import datalist_path, write_datalist_json
from common.data.problems import raise_problems, read_all_voxels
from common.data.splits import fold_of

__all__ = [
    "BRATS_MODALITIES",
    "BRATS_LABELS",
    "BRATS_REGIONS",
    "SEGMENTATION_ALIASES",
    "BratsCase",
    "find_brats_cases",
    "brats_datalist",
    "write_brats_datalist",
]

logger = logging.getLogger(__name__)

BRATS_MODALITIES = ("flair", "t1", "t1ce", "t2")


BRATS_LABELS = {
    "background": 0,
    "necrotic and non-enhancing tumour core": 1,
    "peritumoural oedema": 2,
    "GD-enhancing tumour": 4,
}


BRATS_REGIONS = {"WT": (1, 2, 4), "TC": (1, 4), "ET": (4,)}


SEGMENTATION_ALIASES = {"BraTS20_Training_355": "W39_1998.09.19_Segm"}  # case -> stem of its segmentation file


GENERATE_HINT = (
    "generate the synthetic copy with `python -m common.synthetic.brats --out data/brats` (its case folders are in "
    "data/brats/MICCAI_BraTS2020_TrainingData), or point dataset_dir at an unpacked BraTS folder of case folders "
    "(e.g. MICCAI_BraTS2020_TrainingData/)"
)


LABEL_3_HINT = (
    "label 3 is not a BraTS 2017-2021 label: BraTS 2012-2016 used it for non-enhancing tumour (merged into 1 since), "
    "the Medical Segmentation Decathlon (Task01) for enhancing tumour with 1 = oedema and 2 = non-enhancing, and "
    "BraTS 2023 for enhancing tumour; convert such a copy to 0/1/2/4 first, nothing is remapped here"
)


_FILE_NAME = re.compile(r"^(?P<case>.+)_(?P<kind>flair|t1|t1ce|t2|seg)\.nii(?:\.gz)?$")


def _is_nifti(name: str) -> bool:
    return name.endswith((".nii", ".nii.gz")) and not name.startswith(".")  # ._* are macOS resource forks


def _stem(name: str) -> str:
    return name[: -len(".nii.gz")] if name.endswith(".gz") else name[: -len(".nii")]


@dataclass(frozen=True)
class BratsCase:
    """One case folder: ``case`` (the folder name, the patient id), ``images`` (modality -> file, in
    :data:`BRATS_MODALITIES` order) and ``seg`` (``None`` where the folder has none, e.g. validation cases)."""

    case: str
    folder: Path
    images: dict[str, Path]
    seg: Path | None


def _kind(case: str, name: str) -> str | None:
    """The modality (or ``seg``) a NIfTI file name stands for in folder ``case``; ``None`` for an unexpected name."""
    match = _FILE_NAME.match(name)
    if match is not None and match["case"] == case:
        return match["kind"]
    return "seg" if SEGMENTATION_ALIASES.get(case) == _stem(name) else None


def _scan_case(folder: Path, require_seg: bool, problems: list[str]) -> BratsCase:
    """List one case folder's files, appending every layout problem found to ``problems``."""
    case = folder.name
    found: dict[str, list[Path]] = {}
    unexpected = False
    for path in sorted(folder.iterdir()):
        if not path.is_file() or not _is_nifti(path.name):
            continue  # side files, notes, sub-folders
        kind = _kind(case, path.name)
        if kind is None:
            problems.append(
                f"{path}: expected a name {case}_{{{','.join(BRATS_MODALITIES)},seg}}.nii[.gz], found '{path.name}'"
            )
            unexpected = True
            continue
        found.setdefault(kind, []).append(path)
    if not found and not unexpected:
        inner = sum(p.is_dir() for p in folder.iterdir())
        problems.append(
            f"{folder}: expected case files {case}_{{{','.join(BRATS_MODALITIES)},seg}}.nii[.gz], found none"
            + (f" (it holds {inner} folders: point dataset_dir at it if they are the cases)" if inner else "")
        )
        return BratsCase(case, folder, {}, None)
    for kind, paths in found.items():
        if len(paths) > 1:
            problems.append(
                f"{paths[0]}: expected one {kind} file per case, found also {', '.join(p.name for p in paths[1:])}"
            )
    for m in BRATS_MODALITIES:
        if m not in found:
            problems.append(f"{folder / case}_{m}.nii[.gz]: expected the {m} image of the case, found none")
    if require_seg and "seg" not in found:
        problems.append(
            f"{folder / case}_seg.nii[.gz]: expected the segmentation of the case (training cases need one), "
            "found none"
        )
    images = {m: found[m][0] for m in BRATS_MODALITIES if m in found}
    return BratsCase(case, folder, images, found["seg"][0] if "seg" in found else None)


def _header(path: Path, problems: list[str]) -> tuple[tuple[int, ...], np.ndarray] | None:
    try:
        img = nib.load(str(path))  # header only: the voxel data stay on disk
    except Exception as e:  # nibabel raises many types for non-NIfTI or truncated headers
        problems.append(f"{path}: expected a readable NIfTI header, found {type(e).__name__}: {e}")
        return None
    if len(img.shape) != 3:
        problems.append(f"{path}: expected a 3D volume (H, W, D), found shape {tuple(img.shape)}")
        return None
    return tuple(int(s) for s in img.shape), np.asarray(img.affine, dtype=np.float64)


def _affine_text(affine: np.ndarray) -> str:
    return str(np.round(affine[:3], 3).tolist())


def _check_headers(case: BratsCase, problems: list[str], atol: float = 1e-3) -> None:
    """Append a problem for every file of ``case`` whose shape or affine differs from the majority of its files."""
    files = [case.images[m] for m in BRATS_MODALITIES] + ([case.seg] if case.seg is not None else [])
    headers = {path: h for path in files if (h := _header(path, problems)) is not None}
    if len(headers) < 2:
        return
    shape = Counter(s for s, _ in headers.values()).most_common(1)[0][0]  # ties: the first file's (FLAIR)
    affine = Counter(tuple(np.round(a, 3).ravel()) for _, a in headers.values()).most_common(1)[0][0]
    affine = np.asarray(affine).reshape(4, 4)
    for path, (s, a) in headers.items():
        if s != shape:
            problems.append(f"{path}: expected the shape of the other files of {case.case}, {shape}, found {s}")
        if not np.allclose(a, affine, atol=atol):
            problems.append(
                f"{path}: expected the affine of the other files of {case.case}, {_affine_text(affine)}, found "
                f"{_affine_text(a)} (differs by up to {np.abs(a - affine).max():.3g})"
            )


def _check_voxels(path: Path, is_label: bool, problems: list[str]) -> None:
    """Read every voxel of ``path`` (the whole gzip stream), appending a problem when it cannot be read, holds NaN or
    inf, or (``is_label``) holds a value other than the BraTS labels (no rounding: 1.5 is refused)."""
    data = read_all_voxels(path, problems)
    if data is None or not is_label:
        return
    values = np.unique(data[np.isfinite(data)] if data.dtype.kind == "f" else data)
    allowed = sorted(BRATS_LABELS.values())
    foreign = [v for v in values.tolist() if v not in allowed]
    if foreign:
        shown = ", ".join(f"{v:g}" for v in foreign[:6]) + (
            f", ... ({len(foreign)} values)" if len(foreign) > 6 else ""
        )
        problems.append(
            f"{path}: expected label values {', '.join(map(str, allowed))} (BraTS), found also {shown}"
            + (f"; {LABEL_3_HINT}" if 3 in foreign else "")
        )


def find_brats_cases(dataset_dir: str | Path, require_seg: bool = True, read_voxels: bool = True) -> list[BratsCase]:
    """List the cases under ``dataset_dir`` (the folder of case folders), in name order, checking layout and headers.

    Every layout problem (a missing modality or segmentation when ``require_seg``, two files for one modality such as
    ``.nii`` beside ``.nii.gz``, a NIfTI file whose name does not belong to its case folder, a NIfTI file outside the
    case folders, a case folder without NIfTI files) is reported in one ``FileNotFoundError`` naming each file. Then
    the headers of every file are read (no voxel data): every unreadable or non-3D header, and every file whose shape
    or affine differs from the other files of its case (they are co-registered on one grid), is reported in one
    ``ValueError``. Other files (CSV side files, notes) are ignored. With ``require_seg=False`` (validation folders)
    ``seg`` is ``None`` where absent. Then, with ``read_voxels`` (default), every file is read whole (a NIfTI header
    does not tell a truncated ``.nii.gz``): every unreadable file, every image or segmentation with NaN or inf and
    every segmentation with a value other than 0, 1, 2, 4 is reported in one ``ValueError`` before anything is built
    on the data (an error inside MONAI's caching threads aborts the process instead). This reads the whole copy once
    more (as long as loading it: 0.03 s more for the 10 synthetic cases of 32x32x24 voxels, 0.12 s for 20 of
    64x64x48, 0.2 s per case of five 240x240x155 files, measured on the synthetic copy); ``read_voxels=False`` skips it.
    """
    root = Path(dataset_dir)
    if not root.is_dir():
        raise FileNotFoundError(
            f"{root}: expected a folder of BraTS case folders, found no such folder; {GENERATE_HINT}"
        )
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not folders:
        raise FileNotFoundError(
            f"{root}: expected case folders (BraTS20_Training_001/, BraTS2021_00000/, ...), found none; {GENERATE_HINT}"
        )
    problems = [
        f"{p}: expected NIfTI files only inside case folders, found one beside them"
        for p in sorted(root.iterdir())
        if p.is_file() and _is_nifti(p.name)
    ]
    cases = [_scan_case(folder, require_seg, problems) for folder in folders]
    if problems:
        raise_problems(FileNotFoundError, root, "not a BraTS-layout folder of case folders", problems, GENERATE_HINT)
    t0 = time.perf_counter()
    for case in cases:
        _check_headers(case, problems)
    if problems:
        raise_problems(
            ValueError,
            root,
            "unreadable headers, or files that disagree with the other files of their case",
            problems,
            "the four modalities and the segmentation of a case are co-registered on one grid (240x240x155 at 1 mm as "
            "released); a file that differs was resampled, cropped or comes from another case: compare the headers "
            "with `nib-ls <files>`",
        )
    logger.info("BraTS %s: %d cases, headers checked in %.1f s", root, len(cases), time.perf_counter() - t0)
    if read_voxels:
        t0 = time.perf_counter()
        for case in cases:
            for path in case.images.values():
                _check_voxels(path, False, problems)
            if case.seg is not None:
                _check_voxels(case.seg, True, problems)
        if problems:
            raise_problems(
                ValueError,
                root,
                "unreadable files, non-finite voxels or labels other than BraTS'",
                problems,
                "a truncated file is an interrupted download or copy: fetch the case again (`gzip -t <file>` tests a "
                ".nii.gz); segmentations hold 0 background, 1 necrotic core, 2 oedema, 4 enhancing tumour",
            )
        logger.info("BraTS %s: every voxel read and checked in %.1f s", root, time.perf_counter() - t0)
    return cases


def _check_modalities(modalities: Sequence[str]) -> tuple[str, ...]:
    modalities = tuple(modalities)
    if not modalities or len(set(modalities)) != len(modalities) or not set(modalities) <= set(BRATS_MODALITIES):
        raise ValueError(
            f"modalities: expected distinct names among {', '.join(BRATS_MODALITIES)}, found {list(modalities)}"
        )
    return modalities


def brats_datalist(
    dataset_dir: str | Path,
    testing_dir: str | Path | None = None,
    modalities: Sequence[str] = BRATS_MODALITIES,
    num_folds: int = 5,
    seed: int = 0,
    base_dir: str | Path | None = None,
) -> dict:
    """Scan a BraTS copy (:func:`find_brats_cases`) into a decathlon-style datalist with patient-level folds.

    Returns ``{"training": [...], "testing": [...], <metadata>}``. A training item (every case of ``dataset_dir``,
    each with a segmentation) is ``{"image": [<one file per modality>], "label": <seg>, "fold": k, "case": id}``; a
    testing item (every case of ``testing_dir``, e.g. the validation folder, if given) has ``image``, ``case`` and
    ``label`` only where a segmentation exists. ``image`` lists the files of ``modalities`` in that order (default
    FLAIR, T1, T1ce, T2), so ``LoadImaged(keys=["image", "label"], ensure_channel_first=True)`` gives a
    ``(len(modalities), H, W, D)`` image and a ``(1, H, W, D)`` label. Fold ``k`` is the validation set of fold ``k``
    of :func:`~common.data.kfold_split` over the case ids (``num_folds``, ``seed``): equal arguments give equal folds
    whatever the listing order, and every case is in exactly one fold. Paths are absolute, or relative to
    ``base_dir`` when given (the folder of the JSON file: :func:`monai.data.load_decathlon_datalist` joins them back).
    Metadata: ``name``, ``description``, ``tensorImageSize``, ``modality``, ``labels``, ``numTraining``, ``numTest``,
    ``num_folds``, ``seed``. A case id found in both folders raises ``ValueError``.
    """
    modalities = _check_modalities(modalities)
    training = find_brats_cases(dataset_dir, require_seg=True)
    testing = find_brats_cases(testing_dir, require_seg=False) if testing_dir is not None else []
    shared = sorted({c.case for c in training} & {c.case for c in testing})
    if shared:
        raise ValueError(
            f"{testing_dir}: expected cases other than the training cases of {dataset_dir}, found {len(shared)} of "
            f"them again ({', '.join(shared[:5])}{', ...' if len(shared) > 5 else ''})"
        )
    ids = [c.case for c in training]
    folds = fold_of(ids, num_folds, seed)

    def path(p: Path) -> str:
        return datalist_path(p, base_dir)

    def item(c: BratsCase) -> dict:
        d: dict = {"image": [path(c.images[m]) for m in modalities]}
        if c.seg is not None:
            d["label"] = path(c.seg)
        if c.case in folds:
            d["fold"] = folds[c.case]
        d["case"] = c.case
        return d

    return {
        "name": "BraTS",
        "description": "multi-parametric brain MRI of gliomas; folds by patient",
        "tensorImageSize": "4D",
        "modality": {str(i): m for i, m in enumerate(modalities)},
        "labels": {str(v): k for k, v in BRATS_LABELS.items()},
        "numTraining": len(training),
        "numTest": len(testing),
        "num_folds": num_folds,
        "seed": seed,
        "training": [item(c) for c in training],
        "testing": [item(c) for c in testing],
    }


def write_brats_datalist(
    dataset_dir: str | Path,
    path: str | Path,
    testing_dir: str | Path | None = None,
    modalities: Sequence[str] = BRATS_MODALITIES,
    num_folds: int = 5,
    seed: int = 0,
) -> Path:
    """Write :func:`brats_datalist` as JSON at ``path`` (atomically), file paths relative to its folder; returns it.

    Read it back with ``monai.data.load_decathlon_datalist(path, data_list_key="training")`` (or ``"testing"``):
    the items come back with absolute paths, as :func:`brats_datalist` returns them without ``base_dir``. ``path``
    may not lie in the folder of case folders itself: ``load_decathlon_datalist`` turns any other value that names
    an existing path beside the JSON file into that path, so there every ``case`` id would become its folder's path.
    """
    path = Path(path)
    datalist = brats_datalist(dataset_dir, testing_dir, modalities, num_folds, seed, base_dir=path.parent)
    return write_datalist_json(datalist, path, (dataset_dir, testing_dir))
