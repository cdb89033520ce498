"""BraTS slices for IGS: four modalities as channels, nested classes, patient-level splits, errors naming the file."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from common.apps.igs import BRATS_REGION_CLASSES, brats_slices, case_slices, load_brats_case, pooled_dice
from common.data import brats_datalist
from common.synthetic.brats import TRAINING_FOLDERS, write_synthetic_brats
from common.transforms import BRATS_NESTED_CLASSES, ClassesToRegions, ClassesToRegionsd

SHAPE = (32, 32, 20)


@pytest.fixture(scope="module")
def brats(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("brats")
    return write_synthetic_brats(out, n_cases=5, shape=SHAPE, n_validation=0, seed=3) / TRAINING_FOLDERS[2020]


def _copy(brats: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(brats, tmp_path / "cases"))


def test_classes_to_regions_against_a_hand_computed_reference():
    classes = torch.tensor([[[0, 1, 2, 3], [3, 2, 1, 0]]])  # (1, H=2, W=4)
    regions = ClassesToRegions(list(BRATS_REGION_CLASSES.values()))(classes)
    expected = torch.tensor(
        [
            [[0, 1, 1, 1], [1, 1, 1, 0]],  # WT = 1, 2, 3
            [[0, 0, 1, 1], [1, 1, 0, 0]],  # TC = 2, 3
            [[0, 0, 0, 1], [1, 0, 0, 0]],  # ET = 3
        ]
    )
    assert torch.equal(regions, expected.to(regions.dtype))
    onehot = torch.nn.functional.one_hot(classes[0], 4).permute(2, 0, 1)  # (K, H, W) reads as its argmax
    assert torch.equal(ClassesToRegions([(1, 2, 3), (3,)])(onehot), expected[[0, 2]].to(onehot.dtype))
    d = ClassesToRegionsd("label", [(2, 3)])({"label": classes.numpy(), "other": 1})
    assert isinstance(d["label"], np.ndarray) and d["label"].tolist() == expected[[1]].tolist() and d["other"] == 1
    with pytest.raises(ValueError, match="regions: expected at least one non-empty set"):
        ClassesToRegions([()])


def test_pooled_dice_of_regions_is_the_dice_of_the_united_classes():
    pred = torch.tensor([[[0, 1, 2, 3]], [[3, 3, 0, 0]]], dtype=torch.uint8)  # (N=2, 1, 4) -> (N, H, W)
    label = torch.tensor([[[1, 1, 3, 3]], [[3, 0, 0, 2]]], dtype=torch.uint8)
    dice = pooled_dice(pred, label, ["a", "a"], regions=[(1, 2, 3), (3,)])
    # WT: pred {1,2,3 | 0,1}, label {0,1,2,3 | 0,3}: inter 3 + 1, sizes 3 + 2 and 4 + 2 -> 8 / 11
    # ET: pred {3 | 0,1}, label {2,3 | 0}: inter 1 + 1, sizes 1 + 2 and 2 + 1 -> 4 / 6
    np.testing.assert_allclose(dice, [[8 / 11, 4 / 6]])
    np.testing.assert_array_equal(dice[:, 1], pooled_dice(pred, label, ["a", "a"], 4)[:, 3])  # ET is class 3 alone
    with pytest.raises(ValueError, match="expected num_classes or regions"):
        pooled_dice(pred, label, ["a", "a"])


def test_slices_carry_four_modalities_and_nested_classes_per_patient_split(brats):
    train, val, test = (brats_slices(brats, s, num_folds=5) for s in ("train", "val", "test"))
    patients = [{d["patient"] for d in part} for part in (train, val, test)]
    assert len(patients[0]) == 3 and len(patients[1]) == len(patients[2]) == 1
    assert not (patients[0] & patients[1] or patients[0] & patients[2] or patients[1] & patients[2])
    item = next(d for d in brats_datalist(brats)["training"] if d["case"] == test[0]["patient"])
    seg = np.asarray(nib.load(item["label"]).dataobj)
    flair = np.asarray(nib.load(item["image"][0]).dataobj).astype(np.float64)
    brain = np.stack([np.asarray(nib.load(p).dataobj) != 0 for p in item["image"]]).any(0)
    reference = {0: 0, 2: 1, 1: 2, 4: 3}  # BraTS label -> nested class (oedema, non-enhancing core, enhancing)
    assert [d["slice"] for d in test] == np.flatnonzero(brain.any(axis=(0, 1))).tolist()
    for d in test:
        z = d["slice"]
        assert d["image"].shape == (4,) + SHAPE[:2] and d["image"].dtype == np.float32
        assert d["label"].shape == (1,) + SHAPE[:2] and d["label"].dtype == np.uint8
        np.testing.assert_array_equal(d["label"][0], np.vectorize(reference.get)(seg[..., z]))
        np.testing.assert_allclose(d["image"][0], flair[..., z] / flair[brain].mean(), rtol=1e-5)
        assert (d["image"] >= 0).all() and d["tumour"] == bool(seg[..., z].any()) and d["spacing"] == (1.0, 1.0, 1.0)
    assert BRATS_NESTED_CLASSES[0] == "background" and len(BRATS_NESTED_CLASSES) == 4
    few = brats_slices(brats, "test", slices_per_case=3)
    assert [d["slice"] for d in few] == [test[0]["slice"], test[len(test) // 2]["slice"], test[-1]["slice"]]
    with pytest.raises(ValueError, match="slices_per_case: expected >= 1"):
        brats_slices(brats, "test", slices_per_case=0)


def test_label_3_names_the_file(brats, tmp_path):
    cases = _copy(brats, tmp_path)
    seg_file = sorted(cases.glob("*/*_seg.nii.gz"))[0]
    img = nib.load(seg_file)
    seg = np.asarray(img.dataobj).copy()
    seg[seg == 4] = 3
    seg[0, 0, 0] = 3
    nib.save(nib.Nifti1Image(seg, img.affine), seg_file)
    with pytest.raises(ValueError, match=rf"{seg_file}: expected label values 0, 1, 2, 4 \(BraTS\), found also 3"):
        brats_slices(cases, "all")  # the copy is refused up front, before any slice is cut
    item = {"image": sorted(str(p) for p in seg_file.parent.glob("*_flair.nii.gz")), "label": str(seg_file)}
    with pytest.raises(
        ValueError, match=rf"{seg_file}: expected BraTS labels 0, 1, 2, 4 only, found also 3 \(\d+ voxels"
    ):
        load_brats_case(item)  # a single item (a MONAI Label datastore image) is checked as it is read


def test_unreadable_voxel_data_names_the_file(brats, tmp_path):
    cases = _copy(brats, tmp_path)
    t2 = sorted(cases.glob("*/*_t2.nii.gz"))[0]
    data = gzip.decompress(t2.read_bytes())
    t2.write_bytes(gzip.compress(data[: len(data) // 2]))  # header intact, voxel data cut short
    with pytest.raises(ValueError, match=rf"{t2}: expected readable NIfTI voxel data, found"):
        load_brats_case({"image": [str(t2)]})
    with pytest.raises(ValueError, match=rf"{t2}: expected a readable NIfTI volume \(every voxel of the file\)"):
        brats_slices(cases, "all")


@pytest.mark.parametrize("problem", ["missing modality", "missing seg", "unreadable header", "shape", "affine"])
def test_layout_problems_stop_before_reading_naming_the_file(brats, tmp_path, problem):
    cases = _copy(brats, tmp_path)
    case = sorted(p for p in cases.iterdir() if p.is_dir())[1]
    t1ce, seg = case / f"{case.name}_t1ce.nii.gz", case / f"{case.name}_seg.nii.gz"
    if problem == "missing modality":
        t1ce.unlink()
        error, message = FileNotFoundError, rf"{case / case.name}_t1ce.nii\[.gz\]: expected the t1ce image"
    elif problem == "missing seg":
        seg.unlink()
        error, message = FileNotFoundError, rf"{case / case.name}_seg.nii\[.gz\]: expected the segmentation"
    elif problem == "unreadable header":
        t1ce.write_bytes(b"not a nifti file")
        error, message = ValueError, rf"{t1ce}: expected a readable NIfTI header"
    else:
        img = nib.load(t1ce)
        data, affine = np.asarray(img.dataobj), img.affine.copy()
        if problem == "shape":
            data = data[:-1]
        else:
            affine[0, 3] += 5.0
        nib.save(nib.Nifti1Image(data, affine), t1ce)
        error, message = ValueError, rf"{t1ce}: expected the {problem} of the other files of {case.name}"
    with pytest.raises(error, match=message):
        brats_slices(cases, "train")


def test_a_4d_nifti_case_gives_the_slices_of_its_modality_files(brats, tmp_path):
    """A MONAI Label datastore image (the modalities on the last axis of one 4D NIfTI) reads as the case's files."""
    item = brats_datalist(brats, None, num_folds=5)["training"][0]
    stack = np.stack([np.asarray(nib.load(p).dataobj, np.float32) for p in item["image"]], -1)
    four_d = tmp_path / "case.nii.gz"
    nib.save(nib.Nifti1Image(stack, nib.load(item["image"][0]).affine), four_d)
    files = case_slices(item, slices_per_case=5)
    stacked = case_slices({"image": str(four_d), "label": item["label"], "case": item["case"]}, slices_per_case=5)
    assert len(files) == len(stacked) == 5
    for a, b in zip(files, stacked):
        np.testing.assert_allclose(a["image"], b["image"], rtol=1e-6)
        assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a if k != "image")
    with pytest.raises(ValueError, match=r"flair.nii.gz: expected one 4D NIfTI \(H, W, D, modalities\)"):
        load_brats_case({"image": item["image"][0]})
    small = tmp_path / "small_seg.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 4), np.uint8), np.eye(4)), small)
    with pytest.raises(ValueError, match=r"small_seg.nii.gz: expected a label of shape \(32, 32, 20\), found"):
        load_brats_case({"image": str(four_d), "label": str(small)})
