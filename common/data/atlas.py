"""ATLAS (Anatomical Tracings of Lesions After Stroke) R1.2 and R2.0: layout, header and voxel checks, and a
decathlon-style datalist with subject-level folds.

Layouts (``<dataset_dir>`` is the folder that holds ``Training/`` (R2.0) or the ``Site*`` folders (R1.2))::

    R2.0: <dataset_dir>/Training/R001/sub-r001s001/ses-1/anat/sub-r001s001_ses-1_space-MNI152NLin2009aSym_T1w.nii.gz
          <dataset_dir>/Training/R001/sub-r001s001/ses-1/anat/
              sub-r001s001_ses-1_space-MNI152NLin2009aSym_label-L_desc-T1lesion_mask.nii.gz
          <dataset_dir>/Testing/R0xx/sub-.../ses-1/anat/..._T1w.nii.gz            (no masks)
    R1.2: <dataset_dir>/Site1/031768/t01/031768_t1w_deface_stx.nii.gz
          <dataset_dir>/Site1/031768/t01/031768_LesionSmooth_stx.nii.gz       (or _LesionSmooth_1_stx, _2_stx, ...)

197x233x189 at 1 mm in MNI space. One item per scan (an R2.0 session, an R1.2 time point); several lesion files of
one scan are all listed under ``label`` and merged into one mask when loaded
(:class:`~common.transforms.MergeLesionMasksd`, which also refuses non-binary masks, naming the file). Folds are by
subject: the scans of one subject are in one fold. Side files (``dataset_description.json``, CSV, spreadsheets, the
template) are ignored.
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

from common.data.datalist import datalist_path, write_datalist_json
from common.data.problems import raise_problems, read_all_voxels
from common.data.splits import fold_of

__all__ = [
    "ATLAS_RELEASES",
    "ATLAS_SHAPE",
    "ATLAS_LABELS",
    "AtlasScan",
    "atlas_release",
    "find_atlas_scans",
    "atlas_datalist",
    "write_atlas_datalist",
]

logger = logging.getLogger(__name__)

ATLAS_RELEASES = ("R1.2", "R2.0")

ATLAS_SHAPE = (197, 233, 189)  # at 1 mm, MNI152 2009 space (both releases)

ATLAS_LABELS = {"background": 0, "stroke lesion": 1}

_MASK_STORAGES = ((0, 1), (0, 255))  # the binary storages found in ATLAS copies, as MergeLesionMasks accepts them

GENERATE_HINT = (
    "generate the synthetic copy with `python -m common.synthetic.atlas --out data/atlas` (R2.0 layout: "
    "data/atlas/ATLAS_2 holds Training/), or point dataset_dir at an unpacked ATLAS release: the ATLAS_2 folder that "
    "holds Training/ (R2.0), or the folder of Site1 ... Site9 (R1.2)"
)

_R20_T1 = re.compile(r"^(?P<sub>sub-[A-Za-z0-9]+)_(?P<ses>ses-[A-Za-z0-9]+)_space-[A-Za-z0-9]+_T1w\.nii(?:\.gz)?$")
_R20_MASK = re.compile(
    r"^(?P<sub>sub-[A-Za-z0-9]+)_(?P<ses>ses-[A-Za-z0-9]+)_space-[A-Za-z0-9]+_label-[A-Za-z0-9]+"
    r"_desc-T1lesion_mask\.nii(?:\.gz)?$"
)
_R12_T1 = re.compile(r"^(?P<sub>[A-Za-z0-9]+)_t1w_deface_stx\.nii(?:\.gz)?$")
_R12_MASK = re.compile(r"^(?P<sub>[A-Za-z0-9]+)_LesionSmooth(?:_\d+)?_stx\.nii(?:\.gz)?$")


def _is_nifti(name: str) -> bool:
    return name.endswith((".nii", ".nii.gz")) and not name.startswith(".")


@dataclass(frozen=True)
class AtlasScan:
    """One scan: ``case`` (``<subject>_<session>``, unique), ``subject`` (the patient: folds split by it), ``site``
    (R2.0 cohort ``R001``... or R1.2 ``Site1``...), ``image`` (the T1w file) and ``lesions`` (its lesion mask files,
    merged into one mask when loaded; empty where the folder has none, e.g. R2.0 ``Testing``)."""

    case: str
    subject: str
    site: str
    image: Path
    lesions: tuple[Path, ...]


def atlas_release(dataset_dir: str | Path) -> str:
    """``"R2.0"`` when ``dataset_dir`` holds ``Training/``, ``"R1.2"`` when it holds ``Site*`` folders; else a
    ``FileNotFoundError`` saying what was found and how to get data."""
    root = Path(dataset_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: expected an ATLAS R1.2 or R2.0 folder, found no such folder; {GENERATE_HINT}")
    if (root / "Training").is_dir():
        return "R2.0"
    if any(p.is_dir() and p.name.startswith("Site") for p in root.iterdir()):
        return "R1.2"
    found = sorted(p.name for p in root.iterdir())[:8]
    raise FileNotFoundError(
        f"{root}: expected Training/ (ATLAS R2.0) or Site1/ ... (ATLAS R1.2), found {found or 'an empty folder'}; "
        f"{GENERATE_HINT}"
    )


def _scan_session(folder: Path, pattern_t1: re.Pattern, pattern_mask: re.Pattern, expect: str, problems: list[str]):
    """The T1w file and lesion masks of one scan folder (R2.0 ``anat/``, R1.2 ``t01/``); problems appended."""
    t1: list[Path] = []
    masks: list[Path] = []
    for path in sorted(folder.iterdir()):
        if not path.is_file() or not _is_nifti(path.name):
            continue
        if pattern_t1.match(path.name):
            t1.append(path)
        elif pattern_mask.match(path.name):
            masks.append(path)
        else:
            problems.append(f"{path}: expected a T1w image or a lesion mask named {expect}, found '{path.name}'")
    if len(t1) > 1:
        problems.append(f"{t1[0]}: expected one T1w image per scan, found also {', '.join(p.name for p in t1[1:])}")
    return t1, masks


def _scans_r20(root: Path, subset: str, require_label: bool, problems: list[str]) -> list[AtlasScan]:
    expect = "sub-<id>_ses-<n>_space-<space>_{T1w,label-L_desc-T1lesion_mask}.nii[.gz]"
    base = root / subset
    scans = []
    cohorts = sorted(p for p in base.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not cohorts:
        problems.append(f"{base}: expected cohort folders (R001, R002, ...), found none")
    for cohort in cohorts:
        subjects = sorted(p for p in cohort.iterdir() if p.is_dir() and p.name.startswith("sub-"))
        if not subjects:
            problems.append(f"{cohort}: expected subject folders sub-<id>/, found none")
        for sub in subjects:
            sessions = sorted(p for p in sub.iterdir() if p.is_dir() and p.name.startswith("ses-"))
            if not sessions:
                problems.append(f"{sub}: expected session folders ses-<n>/anat/, found none")
            for ses in sessions:
                anat = ses / "anat"
                stem = f"{sub.name}_{ses.name}"
                if not anat.is_dir():
                    problems.append(f"{anat}: expected the anat folder of {stem}, found none")
                    continue
                t1, masks = _scan_session(anat, _R20_T1, _R20_MASK, expect, problems)
                for p in t1 + masks:
                    if not p.name.startswith(stem + "_"):
                        problems.append(f"{p}: expected a file of {stem} (named {stem}_...), found '{p.name}'")
                if not t1:
                    problems.append(
                        f"{anat / stem}_space-MNI152NLin2009aSym_T1w.nii.gz: expected the T1w image, found none"
                    )
                if require_label and not masks:
                    problems.append(
                        f"{anat / stem}_space-MNI152NLin2009aSym_label-L_desc-T1lesion_mask.nii.gz: expected the "
                        "lesion mask of the scan (training scans need one), found none"
                    )
                if t1:
                    scans.append(AtlasScan(stem, sub.name, cohort.name, t1[0], tuple(masks)))
    return scans


def _scans_r12(root: Path, require_label: bool, problems: list[str]) -> list[AtlasScan]:
    expect = "<id>_t1w_deface_stx.nii[.gz] or <id>_LesionSmooth[_<n>]_stx.nii[.gz]"
    scans = []
    for site in sorted(p for p in root.iterdir() if p.is_dir() and p.name.startswith("Site")):
        subjects = sorted(p for p in site.iterdir() if p.is_dir() and not p.name.startswith("."))
        if not subjects:
            problems.append(f"{site}: expected subject folders (031768/, ...), found none")
        for sub in subjects:
            sessions = sorted(p for p in sub.iterdir() if p.is_dir() and not p.name.startswith("."))
            if not sessions:
                problems.append(f"{sub}: expected time-point folders t01/ (t02/), found none")
            for ses in sessions:
                t1, masks = _scan_session(ses, _R12_T1, _R12_MASK, expect, problems)
                for p in t1 + masks:
                    if not p.name.startswith(sub.name + "_"):
                        problems.append(f"{p}: expected a file of subject {sub.name}, found '{p.name}'")
                if not t1:
                    problems.append(f"{ses / sub.name}_t1w_deface_stx.nii.gz: expected the T1w image, found none")
                if require_label and not masks:
                    problems.append(
                        f"{ses / sub.name}_LesionSmooth_stx.nii.gz: expected at least one lesion mask of the scan, "
                        "found none"
                    )
                if t1:
                    scans.append(AtlasScan(f"{sub.name}_{ses.name}", sub.name, site.name, t1[0], tuple(masks)))
    return scans


def _header(path: Path, problems: list[str]) -> tuple[tuple[int, ...], np.ndarray] | None:
    try:
        img = nib.load(str(path))  # header only
    except Exception as e:  # nibabel raises many types for non-NIfTI or truncated files
        problems.append(f"{path}: expected a readable NIfTI header, found {type(e).__name__}: {e}")
        return None
    if len(img.shape) != 3:
        problems.append(f"{path}: expected a 3D volume, found shape {tuple(img.shape)}")
        return None
    return tuple(int(s) for s in img.shape), np.asarray(img.affine, dtype=np.float64)


def _check_headers(scan: AtlasScan, problems: list[str], atol: float = 1e-3) -> None:
    """Every lesion mask must have the shape and affine of its T1w image."""
    image = _header(scan.image, problems)
    for mask in scan.lesions:
        h = _header(mask, problems)
        if image is None or h is None:
            continue
        if h[0] != image[0]:
            problems.append(f"{mask}: expected the shape of its T1w image {scan.image.name}, {image[0]}, found {h[0]}")
        elif not np.allclose(h[1], image[1], atol=atol):
            problems.append(
                f"{mask}: expected the affine of its T1w image {scan.image.name}, "
                f"{np.round(image[1][:3], 3).tolist()}, found {np.round(h[1][:3], 3).tolist()}"
            )


def _check_voxels(path: Path, is_mask: bool, problems: list[str]) -> None:
    """Read every voxel of ``path`` (the whole gzip stream), appending a problem when it cannot be read, when an image
    holds NaN or inf, or when a lesion mask is not binary in one of the storages :class:`~common.transforms.
    MergeLesionMasks` accepts (0/1 or 0/255, no rounding: 0.999 and NaN are refused)."""
    data = read_all_voxels(path, problems, finite=not is_mask)  # a mask's NaN: refused as a value below
    if data is None or not is_mask:
        return
    values, counts = np.unique(data, return_counts=True)
    if not any(np.isin(values, storage).all() for storage in _MASK_STORAGES):
        found = ", ".join(f"{v:g} ({c} voxels)" for v, c in zip(values.tolist()[:8], counts.tolist()))
        problems.append(
            f"{path}: expected a binary lesion mask (values 0/1 or 0/255), found {found}"
            + (f", ... ({len(values)} values)" if len(values) > 8 else "")
        )


def find_atlas_scans(
    dataset_dir: str | Path, subset: str = "Training", require_label: bool = True, read_voxels: bool = True
) -> list[AtlasScan]:
    """List the scans of an ATLAS copy (release detected by :func:`atlas_release`), checking layout and headers.

    Every layout problem (a scan folder without its T1w image, or without a lesion mask when ``require_label``; two
    T1w images in one scan; a NIfTI file whose name is neither, or belongs to another subject; an empty cohort, site
    or subject folder) is reported in one ``FileNotFoundError`` naming each file. Then every header is read (no voxel
    data): an unreadable or non-3D file, or a lesion mask whose shape or affine differs from its T1w image, is
    reported in one ``ValueError``. Then, with ``read_voxels`` (default), every file is read whole (a NIfTI header does
    not tell a truncated ``.nii.gz``): every unreadable file, every T1w image with NaN or inf and every lesion mask
    that is not 0/1 or 0/255 is reported in one ``ValueError`` before anything is built on the data (an error inside
    MONAI's ``CacheDataset`` threads aborts the process instead: its pool is terminated without joining the threads,
    which are still loading other files when the interpreter exits). This reads the copy once more (about as long as
    loading it). ``subset``: ``"Training"`` or ``"Testing"`` (R2.0 only; its scans have no masks, so pass
    ``require_label=False``). Returns the scans in path order.
    """
    root = Path(dataset_dir)
    release = atlas_release(root)
    problems: list[str] = []
    if release == "R2.0":
        if not (root / subset).is_dir():
            raise FileNotFoundError(f"{root / subset}: expected the {subset} folder of ATLAS R2.0, found none")
        scans = _scans_r20(root, subset, require_label, problems)
    else:
        scans = _scans_r12(root, require_label, problems)
    if not scans and not problems:
        problems.append(f"{root}: expected at least one scan, found none")
    if problems:
        raise_problems(FileNotFoundError, root, f"not an ATLAS {release} layout", problems, GENERATE_HINT)
    t0 = time.perf_counter()
    for scan in scans:
        _check_headers(scan, problems)
    if problems:
        raise_problems(
            ValueError,
            root,
            "unreadable files, or lesion masks that disagree with their T1w image",
            problems,
            "a lesion mask lies on the grid of its T1w image (197x233x189 at 1 mm in MNI space as released); one that "
            "differs was resampled or belongs to another scan: compare the headers with `nib-ls <files>`",
        )
    logger.info("ATLAS %s %s: %d scans, headers checked in %.1f s", release, root, len(scans), time.perf_counter() - t0)
    if read_voxels:
        t0 = time.perf_counter()
        for scan in scans:
            _check_voxels(scan.image, False, problems)
            for mask in scan.lesions:
                _check_voxels(mask, True, problems)
        if problems:
            raise_problems(
                ValueError,
                root,
                "unreadable files, non-finite T1w voxels or non-binary lesion masks",
                problems,
                "a truncated file is an interrupted download or copy: fetch the scan again (`gzip -t <file>` tests a "
                ".nii.gz); lesion masks are stored as 0/1 or 0/255, T1w images hold finite intensities",
            )
        logger.info("ATLAS %s %s: every voxel read and checked in %.1f s", release, root, time.perf_counter() - t0)
    return scans


def atlas_datalist(
    dataset_dir: str | Path,
    num_folds: int = 5,
    seed: int = 0,
    base_dir: str | Path | None = None,
    testing: bool = False,
    read_voxels: bool = True,
) -> dict:
    """Scan an ATLAS copy (:func:`find_atlas_scans`; every voxel read and checked unless ``read_voxels`` is False)
    into a decathlon-style datalist with subject-level folds.

    A training item is ``{"image": <T1w>, "label": [<lesion masks>], "fold": k, "case": <subject_session>,
    "subject": id}``: ``LoadImaged(keys=["image", "label"], ensure_channel_first=True)`` gives a ``(1, H, W, D)``
    image and an ``(n_masks, H, W, D)`` label that :class:`~common.transforms.MergeLesionMasksd` merges. Fold ``k`` of a
    subject: :func:`~common.data.fold_of` over the distinct subjects (``num_folds``, ``seed``), the same for all its
    scans.
    ``testing`` (R2.0): also list ``Testing/`` (T1w only) under ``"testing"``. Paths are absolute, or relative to
    ``base_dir``. Metadata as :func:`~common.data.brats_datalist`'s.
    """
    release = atlas_release(dataset_dir)
    training = find_atlas_scans(dataset_dir, "Training", require_label=True, read_voxels=read_voxels)
    test_scans = (
        find_atlas_scans(dataset_dir, "Testing", require_label=False, read_voxels=read_voxels) if testing else []
    )
    folds = fold_of(list(dict.fromkeys(s.subject for s in training)), num_folds, seed)

    def item(s: AtlasScan) -> dict:
        d: dict = {"image": datalist_path(s.image, base_dir)}
        if s.lesions:
            d["label"] = [datalist_path(p, base_dir) for p in s.lesions]
        if s.subject in folds:
            d["fold"] = folds[s.subject]
        d["case"] = s.case
        d["subject"] = s.subject
        return d

    return {
        "name": f"ATLAS {release}",
        "description": "T1w MRI of chronic stroke with manually traced lesions, MNI152 space; folds by subject",
        "tensorImageSize": "3D",
        "modality": {"0": "T1w"},
        "labels": {str(v): k for k, v in ATLAS_LABELS.items()},
        "numTraining": len(training),
        "numTest": len(test_scans),
        "num_folds": num_folds,
        "seed": seed,
        "training": [item(s) for s in training],
        "testing": [item(s) for s in test_scans],
    }


def write_atlas_datalist(
    dataset_dir: str | Path, path: str | Path, num_folds: int = 5, seed: int = 0, testing: bool = False
) -> Path:
    """Write :func:`atlas_datalist` as JSON at ``path`` (paths relative to its folder); read it back with
    ``monai.data.load_decathlon_datalist(path, data_list_key="training")``."""
    path = Path(path)
    datalist = atlas_datalist(dataset_dir, num_folds, seed, base_dir=path.parent, testing=testing)
    return write_datalist_json(datalist, path, (dataset_dir,))
