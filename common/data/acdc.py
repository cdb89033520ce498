"""ACDC cardiac cine MRI: loader for the distributed layout, patient-level splits.

Layout (``<dataset_dir>/{training,testing}/patientNNN/``): ``Info.cfg`` (``ED``, ``ES``, ``Group``, ``Height``,
``NbFrame``, ``Weight``), ``patientNNN_4d.nii.gz``, ``patientNNN_frameXX.nii.gz`` and ``patientNNN_frameXX_gt.nii.gz``
for the ED and ES frames. Labels: 0 background, 1 RV cavity, 2 LV myocardium, 3 LV cavity."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from monai.transforms import Resize
from tqdm import tqdm

from common.data.splits import kfold_split

__all__ = [
    "LABELS",
    "GROUPS",
    "AcdcFrame",
    "read_info_cfg",
    "find_acdc_frames",
    "acdc_frames",
    "load_acdc_slices",
    "acdc_slices",
]

logger = logging.getLogger(__name__)

LABELS = {"background": 0, "right ventricle": 1, "myocardium": 2, "left ventricle": 3}


GROUPS = ("NOR", "MINF", "DCM", "HCM", "RV")


SUBSETS = ("training", "testing")


GENERATE_HINT = (
    "generate the synthetic copy with `python -m common.synthetic.acdc --out <dir>` (scripts/demo.sh writes "
    "data/acdc), or point --dataset_dir at an unpacked ACDC folder (the one holding training/ and testing/)"
)


@dataclass(frozen=True)
class AcdcFrame:
    """One annotated frame (ED or ES) of one patient."""

    patient: str
    subset: str
    group: str
    phase: str
    image: Path
    label: Path


def read_info_cfg(path: str | Path) -> dict[str, str]:
    """Parse an ACDC ``Info.cfg`` (``key: value`` lines) into a dict of strings."""
    path = Path(path)
    info = {}
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        key, sep, value = line.partition(":")
        if not sep:
            raise ValueError(f"{path}:{n}: expected 'key: value', found {line!r}")
        info[key.strip()] = value.strip()
    return info


def _patient_frames(folder: Path, subset: str, problems: list[str]) -> list[AcdcFrame]:
    cfg = folder / "Info.cfg"
    if not cfg.is_file():
        problems.append(f"{cfg}: expected the patient's Info.cfg (ED/ES frame numbers), found no file")
        return []
    try:
        info = read_info_cfg(cfg)
        phases = {phase: int(info[phase]) for phase in ("ED", "ES")}
    except (KeyError, ValueError) as e:
        problems.append(f"{cfg}: expected integer 'ED:' and 'ES:' entries, found {e}")
        return []
    frames = []
    for phase, number in phases.items():
        image = folder / f"{folder.name}_frame{number:02d}.nii.gz"
        label = folder / f"{folder.name}_frame{number:02d}_gt.nii.gz"
        for path, what in ((image, f"the {phase} frame image"), (label, f"the {phase} ground truth (_gt)")):
            if not path.is_file():
                problems.append(f"{path}: expected {what}, found no file")
        frames.append(AcdcFrame(folder.name, subset, info.get("Group", "unknown"), phase, image, label))
    return frames


def find_acdc_frames(dataset_dir: str | Path, subsets: Sequence[str] = SUBSETS) -> list[AcdcFrame]:
    """List the annotated ED/ES frames of every patient under ``dataset_dir/<subset>/``, checking the layout.

    Every problem found (missing ``Info.cfg``, frame or ``_gt`` file) is reported in one ``FileNotFoundError``.
    """
    root = Path(dataset_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: expected an ACDC data set folder, found no such folder; {GENERATE_HINT}")
    problems: list[str] = []
    frames: list[AcdcFrame] = []
    for subset in subsets:
        folders = sorted(p for p in (root / subset).glob("patient*") if p.is_dir())
        if not folders:
            problems.append(f"{root / subset}: expected patientNNN folders, found none")
        for folder in folders:
            frames += _patient_frames(folder, subset, problems)
    if problems:
        raise FileNotFoundError(
            f"{root}: not an ACDC-layout data set ({len(problems)} problems):\n  "
            + "\n  ".join(problems[:20])
            + f"\nHint: {GENERATE_HINT}"
        )
    return frames


def acdc_frames(
    dataset_dir: str | Path, split: str, num_folds: int = 5, fold: int = 0, seed: int = 0
) -> list[AcdcFrame]:
    """Frames of one split: ``train`` / ``val`` are a patient-level k-fold of ``training/`` (stratified by group),
    ``test`` is ``testing/``, ``all`` is both."""
    if split == "test":
        return find_acdc_frames(dataset_dir, ("testing",))
    if split == "all":
        return find_acdc_frames(dataset_dir)
    if split not in ("train", "val"):
        raise ValueError(f"split: expected train, val, test or all, found '{split}'")
    frames = find_acdc_frames(dataset_dir, ("training",))
    group = {f.patient: f.group for f in frames}
    patients = sorted(group)
    train, val = kfold_split(patients, num_folds, fold, seed, groups=[group[p] for p in patients])
    keep = set(train if split == "train" else val)
    return [f for f in frames if f.patient in keep]


def _read_volume(path: Path, problems: list[str]) -> nib.Nifti1Image | None:
    try:
        img = nib.load(str(path))
        img.get_fdata(dtype=np.float32)  # force the read, so truncated gzip data fails here
    except Exception as e:  # nibabel raises many types for non-NIfTI or truncated content
        problems.append(f"{path}: expected a readable NIfTI volume, found unreadable content ({e})")
        return None
    if img.ndim != 3:
        problems.append(f"{path}: expected a 3D short-axis stack (H, W, slices), found shape {img.shape}")
        return None
    return img


def _check_frame(f: AcdcFrame, problems: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """Read one frame and its label, appending every problem found; ``(image, label, zooms)`` if usable."""
    img, lab = _read_volume(f.image, problems), _read_volume(f.label, problems)
    if img is None or lab is None:
        return None
    ok = True
    if img.shape != lab.shape:
        problems.append(f"{f.label}: expected the shape of its image {img.shape}, found {lab.shape}")
        ok = False
    image = img.get_fdata(dtype=np.float32)
    if not np.isfinite(image).all():
        problems.append(f"{f.image}: expected finite intensities, found {int((~np.isfinite(image)).sum())} NaN/inf")
        ok = False
    label = np.asarray(lab.dataobj)
    bad = np.setdiff1d(np.unique(label), list(LABELS.values()))
    if bad.size:
        shown = ", ".join(f"{v:g}" for v in bad[:5].tolist()) + (", ..." if bad.size > 5 else "")
        problems.append(f"{f.label}: expected label values in {{0, 1, 2, 3}}, found also {shown} ({label.dtype})")
        ok = False
    return (image, label, np.asarray(img.header.get_zooms()[:3], dtype=np.float64)) if ok else None


def load_acdc_slices(frames: Sequence[AcdcFrame], spatial_size: int = 256) -> list[dict]:
    """Read frames and cut them into 2D magnitude slices resized to ``spatial_size``, checking every file first.

    Returns one dict per slice: ``image`` float32 ``(1, S, S)`` (non-negative magnitude, scanner scale: k-space
    undersampling acts on it, and per-slice z-scoring comes after, in the pipelines), ``label`` float32
    ``(1, S, S)`` in {0, 1, 2, 3}, ``spacing`` (mm per pixel along H and W after the resize, and the slice
    thickness: ``(3,)`` float64), and ``patient``, ``phase``, ``slice``. The same resize as the inference pipeline
    (bilinear with anti-aliasing; labels nearest). Every unreadable or non-3D file, label/image shape mismatch,
    image with NaN/inf and label with a value outside {0, 1, 2, 3} (e.g. 4, or 1.5 in a float label) is reported
    in one ``ValueError`` naming each file; nothing is rounded or clipped silently.
    """
    if not frames:
        raise ValueError("load_acdc_slices: expected at least one frame, found none")
    resize_img = Resize((spatial_size, spatial_size, -1), mode="bilinear", anti_aliasing=True)
    resize_lab = Resize((spatial_size, spatial_size, -1), mode="nearest")
    items = []
    problems: list[str] = []
    for f in tqdm(frames, desc="ACDC frames", disable=None):
        checked = _check_frame(f, problems)
        if checked is None or problems:
            continue  # keep checking the other frames, but build nothing once a problem is known
        volume, label, zooms = checked
        image = resize_img(torch.as_tensor(volume)[None], lazy=False).clamp_min(0)
        label = resize_lab(torch.as_tensor(label.astype(np.float32))[None], lazy=False)
        spacing = zooms * np.array([volume.shape[0] / spatial_size, volume.shape[1] / spatial_size, 1.0])
        for s in range(image.shape[-1]):
            items.append(
                {
                    "image": np.ascontiguousarray(np.asarray(image[..., s]), dtype=np.float32),
                    "label": np.ascontiguousarray(np.asarray(label[..., s]), dtype=np.float32),
                    "spacing": spacing,
                    "patient": f.patient,
                    "phase": f.phase,
                    "slice": s,
                }
            )
    if problems:
        raise ValueError(
            f"ACDC data: {len(problems)} problems:\n  "
            + "\n  ".join(problems[:20])
            + (f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else "")
        )
    return items


def acdc_slices(
    dataset_dir: str | Path, split: str, spatial_size: int = 256, num_folds: int = 5, fold: int = 0, seed: int = 0
) -> list[dict]:
    """:func:`acdc_frames` then :func:`load_acdc_slices`: the slice dicts of one split (see those two)."""
    frames = acdc_frames(dataset_dir, split, num_folds, fold, seed)
    t0 = time.perf_counter()
    items = load_acdc_slices(frames, spatial_size)
    logger.info("ACDC %s: %d slices of %d frames in %.1f s", split, len(items), len(frames), time.perf_counter() - t0)
    return items
