"""LGG (kaggle_3m) cases in a MONAI Label datastore. kaggle_3m stores one RGB tif per slice; a datastore holds one
file per image, so a patient becomes a 4D NIfTI ``(S, S, D, 3)`` of the volume :func:`~common.data.lgg.load_lgg_volumes`
builds (channels pre-contrast, FLAIR, post-contrast, scaled per patient), identity affine as the bundle's NIfTI
masks; its label is ``(S, S, D)`` uint8 0/1 on that grid."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np

from common.data.lgg import find_lgg_patients, load_lgg_volumes

__all__ = ["lgg_training_items", "write_lgg_studies"]


def write_lgg_studies(dataset_dir: str | Path, studies: str | Path, labels: bool = False) -> list[Path]:
    """Write every kaggle_3m patient of ``dataset_dir`` as ``<studies>/<patient>.nii.gz`` (and, with ``labels``, its
    mask as ``<studies>/labels/final/<patient>.nii.gz``, the datastore's saved label). Returns the image paths."""
    out = Path(studies)
    (out / "labels" / "final").mkdir(parents=True, exist_ok=True)
    paths = []
    for v in load_lgg_volumes(find_lgg_patients(dataset_dir, masks=labels)):
        path = out / f"{v['patient']}.nii.gz"
        nib.save(nib.Nifti1Image(np.moveaxis(v["image"], 0, -1), np.eye(4)), path)
        if labels:
            nib.save(nib.Nifti1Image(v["label"][0], np.eye(4)), out / "labels" / "final" / path.name)
        paths.append(path)
    return paths


def lgg_training_items(image: str | Path, label: str | Path) -> tuple[list[dict], dict]:
    """One datastore case as the LGG ``train.json`` reads its data: the slices (``image`` float32 ``(3, S, S)``,
    ``label`` uint8 ``(1, S, S)``) to train on and the whole volume (``(3, S, S, D)``, ``(1, S, S, D)``) to validate.
    """
    volume = np.moveaxis(np.asarray(nib.load(image).dataobj, dtype=np.float32), -1, 0)
    mask = np.asarray(nib.load(label).dataobj)
    if volume.shape[0] != 3 or mask.shape != volume.shape[1:]:
        raise ValueError(
            f"{image}, {label}: expected (S, S, D, 3) and (S, S, D), found {volume.shape} and {mask.shape}"
        )
    mask = (mask > 0).astype(np.uint8)[None]
    slices = [
        {"image": np.ascontiguousarray(volume[..., k]), "label": np.ascontiguousarray(mask[..., k])}
        for k in range(volume.shape[-1])
    ]
    return slices, {"image": volume, "label": mask}
