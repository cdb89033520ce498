"""Spine CT with one label value per vertebra: CSI 2014 (SpineWeb data set 2) and VerSe 2019 / 2020, layout checks and
decathlon-style datalists with patient-level folds (as :func:`~common.data.brats_datalist`).

CSI 2014 (``<dataset_dir>`` holds ``train/`` and ``test/``)::

    train/img/case1.mhd (+ case1.raw)      train/seg/case1_label.mhd (+ .raw)
    test/img/case11.mhd                    test/seg/case11_label.mhd

Some copies are one flat folder (``case1.mhd`` beside ``case1_label.mhd``): that folder is read as ``train/``.

Besides the layout, every image and label pair is read and checked (all problems reported at once, each naming its
file): equal shape, spacing, origin and direction (the affine, to 1e-3 mm); finite image voxels; integer label
values within the data set's range, :data:`SPINE_LABEL_VALUES` (0 background, 1-25 C1-L6 and 28 T13, VerSe's
anatomical numbers; CSI 2014 is read with the same numbering, which the synthetic copy writes: a real copy's values
were not checked here). A value such as 255 is refused.
VerSe 2019 / 2020 (``<dataset_dir>`` holds ``rawdata/`` and ``derivatives/``, e.g. ``dataset-01training``)::

    rawdata/sub-verse004/sub-verse004_ct.nii.gz
    derivatives/sub-verse004/sub-verse004_seg-vert_msk.nii.gz     (+ *_seg-subreg_ctd.json, ignored)

VerSe'20 names carry ``_dir-ax`` / ``_dir-iso`` / ``_dir-sag`` after the subject (``sub-gl003_dir-ax_ct.nii.gz``);
one subject may have several scans (``ses-``/``dir-`` entities), each one item with the subject as its ``case`` so
that folds never split a patient. VerSe labels: 1-7 C1-C7, 8-19 T1-T12, 20-24 L1-L5, 25 L6, 28 T13 (between T12 and
L1): :data:`VERSE_ORDER` is the anatomical order used by the traversal. Images are read by MONAI (``LoadImaged``, with
:class:`~common.data.metaimage.MetaImageReader`, ITK, for ``.mhd``), reoriented to RAS and resampled to 1 mm in the
bundle.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import nibabel as nib
import numpy as np

from common.data.datalist import datalist_path
from common.data.metaimage import check_mhd, read_mhd
from common.data.problems import raise_problems
from common.data.splits import fold_of

__all__ = [
    "CSI_SUBSETS",
    "VERSE_LABELS",
    "VERSE_ORDER",
    "SPINE_LABEL_VALUES",
    "find_csi_cases",
    "find_verse_cases",
    "csi_datalist",
    "verse_datalist",
]

CSI_SUBSETS = ("train", "test")
VERSE_LABELS = {
    **{i: f"C{i}" for i in range(1, 8)},
    **{i + 7: f"T{i}" for i in range(1, 13)},
    **{i + 19: f"L{i}" for i in range(1, 6)},
    25: "L6",
    28: "T13",
}
VERSE_ORDER = (*range(1, 20), 28, *range(20, 26))
"""VerSe label values from the top of the spine to the bottom (T13 = 28 between T12 = 19 and L1 = 20; L6 = 25 last)."""
SPINE_LABEL_VALUES = frozenset(VERSE_LABELS)
"""The vertebra label values a spine loader accepts (besides 0): VerSe's anatomical numbers, 1-25 and 28."""


def _case_number(name: str) -> tuple[int, str]:
    m = re.search(r"(\d+)", name)
    return (int(m.group(1)) if m else -1, name)


def find_csi_cases(dataset_dir: str | Path, subsets: Sequence[str] | None = None) -> dict[str, list[dict]]:
    """Scan a CSI 2014 copy: ``{"train": [{"case", "image", "label"}], "test": [...]}`` (paths as ``Path``).

    Every image needs its ``<case>_label.mhd`` and every ``.mhd`` its data file (named in its header); every pair is
    read and checked (geometry, finite image, label values: see the module's docs); all problems are reported together
    in one ``ValueError`` naming each file. A folder with neither ``train/`` nor ``test/`` but ``.mhd`` files is read
    as a flat copy (images and ``_label`` files side by side) of the training set. ``subsets``: the split folders
    needed (each one missing is a problem; only these are read); None: those present.
    """
    root = Path(dataset_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: expected the CSI 2014 folder (train/img, train/seg, ...), found no folder")
    problems: list[str] = []
    out: dict[str, list[dict]] = {}
    unknown = [s for s in subsets or () if s not in CSI_SUBSETS]
    if unknown:
        raise ValueError(f"subsets: expected some of {CSI_SUBSETS}, found {unknown}")
    present = [s for s in CSI_SUBSETS if (root / s).is_dir()]
    if present:
        folders = {s: (root / s / "img", root / s / "seg") for s in present}
    elif list(root.glob("*.mhd")):
        folders = {"train": (root, root)}
    else:
        raise FileNotFoundError(
            f"{root}: expected train/img + train/seg (and test/...) or a flat folder of .mhd files, found "
            f"{sorted(p.name for p in root.iterdir())[:10]}"
        )
    if subsets is not None:
        for s in subsets:
            if s not in folders:
                found = "a flat folder (read as train/)" if not present else f"only {sorted(folders)}"
                problems.append(f"{root / s}: expected the {s}/ split folder (img/, seg/), found {found}")
        folders = {s: f for s, f in folders.items() if s in subsets}
    for subset, (img_dir, seg_dir) in folders.items():
        for d in {img_dir, seg_dir}:
            if not d.is_dir():
                problems.append(f"{d}: expected a folder of .mhd files, found none")
        if problems:
            continue
        images = sorted(
            (p for p in img_dir.glob("*.mhd") if not p.stem.endswith("_label")), key=lambda p: _case_number(p.stem)
        )
        labels = {p.stem[: -len("_label")]: p for p in seg_dir.glob("*_label.mhd")}
        for p in list(img_dir.iterdir()) + (list(seg_dir.iterdir()) if seg_dir != img_dir else []):
            if p.suffix.lower() not in (".mhd", ".raw", ".zraw") and not p.name.startswith("."):
                problems.append(f"{p}: expected only .mhd/.raw files, found {p.name}")
        for img in images:
            if img.stem not in labels:
                problems.append(f"{img}: expected its label {seg_dir / (img.stem + '_label.mhd')}, found none")
        for stem, lab in labels.items():
            if not (img_dir / f"{stem}.mhd").is_file():
                problems.append(f"{lab}: expected its image {img_dir / (stem + '.mhd')}, found none")
        readable = {p for p in images + list(labels.values()) if _check_mhd(p, problems)}
        out[subset] = [{"case": i.stem, "image": i, "label": labels[i.stem]} for i in images if i.stem in labels]
        for c in out[subset]:
            if c["image"] in readable and c["label"] in readable:
                _check_pair(c["image"], c["label"], read_mhd, problems)
        if not images:
            problems.append(f"{img_dir}: expected case images (*.mhd), found none")
    if problems:
        raise_problems(
            ValueError,
            root,
            "expected the CSI 2014 layout (train/img/caseN.mhd, train/seg/caseN_label.mhd, .raw beside each)",
            problems,
        )
    return out


def _check_mhd(path: Path, problems: list[str]) -> bool:
    """:func:`~common.data.metaimage.check_mhd` (header keys, element type, data file and its size, without reading
    the voxels); False with its error as a problem if it fails."""
    try:
        check_mhd(path)
    except OSError as e:
        problems.append(f"{path}: expected a readable MetaImage header, found {e}")
        return False
    except ValueError as e:  # names the file
        problems.append(str(e))
        return False
    return True


def _read_nifti(path: Path) -> tuple[np.ndarray, np.ndarray]:
    img = nib.load(str(path))
    return np.asanyarray(img.dataobj), img.affine


def _check_pair(image_path: Path, label_path: Path, read, problems: list[str]) -> None:
    """Read an image and its label with ``read`` (path -> ``(array, affine voxel -> mm)``) and add a problem naming
    the file for: a shape, spacing, origin or direction of the label other than the image's; a NaN or infinite image
    voxel; a label value that is not an integer or not 0 or one of :data:`SPINE_LABEL_VALUES`."""
    try:
        image, i_affine = read(image_path)
        label, l_affine = read(label_path)
    except Exception as e:  # nibabel and ITK raise several types for damaged files
        problems.append(f"{image_path} / {label_path}: expected a readable image and label, found {e}")
        return
    if label.shape != image.shape:
        problems.append(
            f"{label_path}: expected the shape of its image {image_path.name} {image.shape}, found {label.shape}"
        )
    i_spacing, l_spacing = np.linalg.norm(i_affine[:3, :3], axis=0), np.linalg.norm(l_affine[:3, :3], axis=0)
    geometry = {
        "spacing (mm)": (i_spacing, l_spacing),
        "origin (mm)": (i_affine[:3, 3], l_affine[:3, 3]),
        "direction": (i_affine[:3, :3] / i_spacing, l_affine[:3, :3] / l_spacing),
    }
    for what, (a, b) in geometry.items():
        if not np.allclose(a, b, rtol=1e-4, atol=1e-3):
            problems.append(
                f"{label_path}: expected the {what} of its image {image_path.name} {np.round(a, 4).tolist()}, found "
                f"{np.round(b, 4).tolist()}"
            )
    if image.dtype.kind == "f" and not np.isfinite(image).all():
        bad = image[~np.isfinite(image)]
        problems.append(
            f"{image_path}: expected finite voxel values, found {int(np.isnan(bad).sum())} NaN and "
            f"{int(np.isinf(bad).sum())} infinite voxels"
        )
    values = np.unique(label)
    if label.dtype.kind == "f":
        fractional = values[values != np.rint(values)]
        if fractional.size:
            problems.append(f"{label_path}: expected integer label values, found {fractional[:5].tolist()}")
        values = np.unique(np.rint(values[np.isfinite(values)]))
    outside = [v for v in values.tolist() if v != 0 and int(v) not in SPINE_LABEL_VALUES]
    if outside:
        problems.append(
            f"{label_path}: expected label values 0 (background), 1-25 or 28 (C1-L6, T13), found {outside[:10]}"
        )


_VERSE_CT = re.compile(r"^(?P<sub>sub-[A-Za-z0-9]+)(?P<ent>(_[a-z]+-[A-Za-z0-9]+)*)_ct\.nii(\.gz)?$")
_VERSE_LAYOUT = "expected the VerSe layout (rawdata/<sub>/<sub>_ct.nii.gz, derivatives/<sub>/..._seg-vert_msk.nii.gz)"


def find_verse_cases(dataset_dir: str | Path) -> list[dict]:
    """Scan a VerSe 2019 / 2020 folder: ``[{"case": subject, "scan": <scan id>, "image", "label"}]``, one per CT.

    Every ``rawdata/<sub>/<scan>_ct.nii.gz`` needs ``derivatives/<sub>/<scan>_seg-vert_msk.nii.gz`` (and every mask
    its CT); every pair is read and checked (geometry, finite image, label values: see the module's docs); all
    problems are reported together in one ``ValueError`` naming each file.
    """
    root = Path(dataset_dir)
    raw, der = root / "rawdata", root / "derivatives"
    problems = [f"{d}: expected the VerSe folder {d.name}/, found none" for d in (raw, der) if not d.is_dir()]
    if problems:
        raise_problems(ValueError, root, _VERSE_LAYOUT, problems)
    cases = []
    masks = {p for p in der.rglob("*_seg-vert_msk.nii*")}
    matched = set()
    for sub in sorted(p for p in raw.iterdir() if p.is_dir()):
        cts = [p for p in sorted(sub.iterdir()) if p.is_file() and "_ct.nii" in p.name]
        if not cts:
            problems.append(f"{sub}: expected a CT (<sub>_ct.nii.gz), found {sorted(p.name for p in sub.iterdir())}")
        for ct in cts:
            m = _VERSE_CT.match(ct.name)
            if m is None or m.group("sub") != sub.name:
                problems.append(f"{ct}: expected a name {sub.name}[_<key>-<value>...]_ct.nii.gz, found {ct.name}")
                continue
            scan = ct.name[: ct.name.index("_ct.nii")]
            candidates = [der / sub.name / f"{scan}_seg-vert_msk{ext}" for ext in (".nii.gz", ".nii")]
            mask = next((c for c in candidates if c.is_file()), None)
            if mask is None:
                problems.append(f"{ct}: expected its mask {candidates[0]}, found none")
                continue
            matched.add(mask)
            cases.append({"case": sub.name, "scan": scan, "image": ct, "label": mask})
            _check_pair(ct, mask, _read_nifti, problems)
    for mask in sorted(masks - matched):
        problems.append(f"{mask}: expected its CT under {raw / mask.parent.name}, found none")
    if not cases and not problems:
        problems.append(f"{raw}: expected subject folders with CTs, found none")
    if problems:
        raise_problems(ValueError, root, _VERSE_LAYOUT, problems)
    return cases


def _items(cases: Sequence[dict], num_folds: int, seed: int, base_dir: str | Path | None, folds: bool) -> list[dict]:
    fold = fold_of(sorted({c["case"] for c in cases}), num_folds, seed) if folds and cases else {}
    out = []
    for c in cases:
        d = {k: (datalist_path(v, base_dir) if isinstance(v, Path) else v) for k, v in c.items()}
        if folds:
            d["fold"] = fold[c["case"]]
        out.append(d)
    return out


def csi_datalist(
    dataset_dir: str | Path,
    num_folds: int = 5,
    seed: int = 0,
    base_dir: str | Path | None = None,
    subsets: Sequence[str] | None = None,
) -> dict:
    """CSI 2014 as a decathlon-style datalist: ``training`` (``train/``, each item with its ``fold`` by case, as
    :func:`~common.data.brats_datalist`) and ``testing`` (``test/``, the challenge's held-out cases, with labels).
    Items: ``{"image", "label", "case"[, "fold"]}``. ``subsets``: the split folders needed, refused when missing
    (:func:`find_csi_cases`; training needs ``["train"]``, evaluation ``["test"]``); None: those present."""
    found = find_csi_cases(dataset_dir, subsets)
    training, testing = found.get("train", []), found.get("test", [])
    return {
        "name": "CSI2014",
        "description": "spine CT, one label value per vertebra; folds by case",
        "tensorImageSize": "3D",
        "modality": {"0": "CT"},
        "numTraining": len(training),
        "numTest": len(testing),
        "num_folds": num_folds,
        "seed": seed,
        "training": _items(training, num_folds, seed, base_dir, folds=True),
        "testing": _items(testing, num_folds, seed, base_dir, folds=False),
    }


def verse_datalist(
    dataset_dir: str | Path,
    testing_dir: str | Path | None = None,
    num_folds: int = 5,
    seed: int = 0,
    base_dir: str | Path | None = None,
) -> dict:
    """VerSe as a decathlon-style datalist: ``training`` (every scan of ``dataset_dir``, folds by subject) and
    ``testing`` (``testing_dir``, e.g. ``dataset-03test``, if given). Items: ``{"image", "label", "case", "scan"[,
    "fold"]}``; ``labels`` are :data:`VERSE_LABELS`, ``order`` is :data:`VERSE_ORDER`. A subject in both folders
    raises ``ValueError``."""
    training = find_verse_cases(dataset_dir)
    testing = find_verse_cases(testing_dir) if testing_dir is not None else []
    shared = sorted({c["case"] for c in training} & {c["case"] for c in testing})
    if shared:
        raise ValueError(f"{testing_dir}: expected subjects other than those of {dataset_dir}, found {shared[:5]}")
    return {
        "name": "VerSe",
        "description": "spine CT, one label value per vertebra (1-24 C1-L5, 25 L6, 28 T13); folds by subject",
        "tensorImageSize": "3D",
        "modality": {"0": "CT"},
        "labels": {str(k): v for k, v in VERSE_LABELS.items()},
        "order": list(VERSE_ORDER),
        "numTraining": len(training),
        "numTest": len(testing),
        "num_folds": num_folds,
        "seed": seed,
        "training": _items(training, num_folds, seed, base_dir, folds=True),
        "testing": _items(testing, num_folds, seed, base_dir, folds=False),
    }
