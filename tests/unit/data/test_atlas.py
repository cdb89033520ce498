"""common.data.atlas and common.synthetic.atlas: R2.0 and R1.2 layouts, lesion masks merged, every layout problem at
once naming the file, headers, non-binary masks, the datalist round trip with subject folds, and the synthetic
writer's grid, determinism and lesions."""

from __future__ import annotations

import shutil

import nibabel as nib
import numpy as np
import pytest
from monai.data import load_decathlon_datalist
from monai.transforms import CopyItemsd, LoadImaged

from common.data import atlas_datalist, atlas_release, find_atlas_scans, write_atlas_datalist
from common.synthetic.atlas import load_template, write_synthetic_atlas
from common.transforms import MergeLesionMasksd
from tests.support.damage import put_non_finite, truncate, voxel_problems

VOXEL = 8  # 25x29x24: tiny


@pytest.fixture(scope="module")
def r20(tmp_path_factory):
    return write_synthetic_atlas(tmp_path_factory.mktemp("r20"), n_subjects=6, n_testing=2, voxel_size=VOXEL)


@pytest.fixture(scope="module")
def r12(tmp_path_factory):
    return write_synthetic_atlas(tmp_path_factory.mktemp("r12"), n_subjects=6, voxel_size=VOXEL, release="R1.2")


def _copy(src, tmp_path):
    return shutil.copytree(src, tmp_path / src.name)


def _load(item):
    """The bundle's load transforms, applied one by one (a Compose would wrap the ValueError in a RuntimeError)."""
    d = CopyItemsd(keys="label", names="label_files")(dict(item))
    d = LoadImaged(keys=["image", "label"], ensure_channel_first=True, image_only=True)(d)
    return MergeLesionMasksd(keys="label", files_key="label_files")(d)


def test_r20_layout_datalist_and_loading(r20, tmp_path):
    assert atlas_release(r20) == "R2.0" and r20.name == "ATLAS_2"
    scans = find_atlas_scans(r20)
    assert [s.case for s in scans] == [f"sub-r00{1 + (k - 1) // 5}s00{k}_ses-1" for k in range(1, 7)]
    assert all(len(s.lesions) == 1 for s in scans) and scans[5].site == "R002"
    testing = find_atlas_scans(r20, "Testing", require_label=False)
    assert len(testing) == 2 and all(not s.lesions for s in testing)
    dl = atlas_datalist(r20, num_folds=3, seed=1, testing=True)
    assert (
        dl["numTraining"] == 6
        and dl["numTest"] == 2
        and sorted(d["fold"] for d in dl["training"]) == [0, 0, 1, 1, 2, 2]
    )
    path = write_atlas_datalist(r20, tmp_path / "datalist.json", num_folds=3, seed=1)
    back = load_decathlon_datalist(str(path), data_list_key="training")
    assert [d["image"] for d in back] == [d["image"] for d in dl["training"]]
    assert [d["label"] for d in back] == [d["label"] for d in dl["training"]]
    item = _load(back[0])
    assert item["image"].shape == (1, 25, 29, 24) and item["label"].shape == (1, 25, 29, 24)
    assert set(np.unique(item["label"].numpy())) == {0.0, 1.0}
    with pytest.raises(ValueError, match="outside the scanned folder"):
        write_atlas_datalist(r20, r20 / "datalist.json")


def test_r12_several_masks_merged_and_0_255_storage(r12):
    assert atlas_release(r12) == "R1.2"
    scans = find_atlas_scans(r12)
    several = [s for s in scans if len(s.lesions) > 1]
    assert several and all(s.case.endswith("_t01") for s in scans)
    assert [s.site for s in scans] == ["Site1"] * 5 + ["Site2"]
    s = several[0]
    masks = [np.asarray(nib.load(str(p)).dataobj) for p in s.lesions]
    want = np.any([m > 0 for m in masks], axis=0)
    item = _load({"image": str(s.image), "label": [str(p) for p in s.lesions]})
    np.testing.assert_array_equal(item["label"][0].numpy() > 0.5, want)
    assert set(np.unique(item["label"].numpy())) <= {0.0, 1.0}
    stored = {int(np.asarray(nib.load(str(p)).dataobj).max()) for s in scans for p in s.lesions}
    assert stored <= {1, 255}


def test_subject_folds_keep_sessions_together(r12, tmp_path):
    root = _copy(r12, tmp_path)
    sub = sorted((root / "Site1").iterdir())[0]
    shutil.copytree(sub / "t01", sub / "t02")  # a second time point of the same subject
    dl = atlas_datalist(root, num_folds=3)
    folds = {d["case"]: d["fold"] for d in dl["training"]}
    assert folds[f"{sub.name}_t01"] == folds[f"{sub.name}_t02"] and len(folds) == 7


def test_every_layout_problem_at_once_naming_the_file(r20, tmp_path):
    root = _copy(r20, tmp_path)
    anat = sorted((root / "Training" / "R001").glob("sub-*/ses-1/anat"))
    mask0 = next(anat[0].glob("*_mask.nii.gz"))
    mask0.unlink()  # missing lesion mask
    extra = anat[1] / "notes.nii.gz"
    extra.write_bytes(b"x")  # an unexpected NIfTI name
    t1_2 = next(anat[2].glob("*_T1w.nii.gz"))
    t1_2.unlink()  # missing T1w
    with pytest.raises(FileNotFoundError) as e:
        find_atlas_scans(root)
    msg = str(e.value)
    assert "(3 problems)" in msg and mask0.name in msg and str(extra) in msg and t1_2.name in msg
    assert "expected the lesion mask" in msg and "expected the T1w image" in msg


def test_unreadable_and_mismatched_headers_naming_the_file(r20, tmp_path):
    root = _copy(r20, tmp_path)
    anat = sorted((root / "Training" / "R001").glob("sub-*/ses-1/anat"))
    broken = next(anat[0].glob("*_T1w.nii.gz"))
    broken.write_bytes(b"not a nifti")
    small = next(anat[1].glob("*_mask.nii.gz"))
    nib.save(nib.Nifti1Image(np.zeros((20, 20, 20), np.uint8), np.eye(4)), str(small))
    with pytest.raises(ValueError) as e:
        find_atlas_scans(root)
    msg = str(e.value)
    assert "(2 problems)" in msg
    assert f"{broken}: expected a readable NIfTI header" in msg
    assert f"{small}: expected the shape of its T1w image" in msg and "(20, 20, 20)" in msg


def test_non_binary_mask_is_refused_naming_the_file(r12, tmp_path):
    root = _copy(r12, tmp_path)
    s = next(s for s in find_atlas_scans(root) if len(s.lesions) > 1)
    img = nib.load(str(s.lesions[1]))
    data = np.asarray(img.dataobj).astype(np.float32)
    data[data > 0] = 0.5  # partial-volume values: not a binary mask
    nib.save(nib.Nifti1Image(data, img.affine), str(s.lesions[1]))
    with pytest.raises(ValueError, match=rf"{s.lesions[1]}: expected a binary lesion mask .* 0.5 \("):
        _load({"image": str(s.image), "label": [str(p) for p in s.lesions]})


def test_unreadable_non_finite_and_non_binary_voxels_are_named_per_file(r20, tmp_path):
    """Every voxel is read before anything is built on the data: a truncated stream, NaN / inf in a T1w image, masks
    holding 2, 0.999 or NaN, in one error; with read_voxels=False only the headers are checked."""
    root = _copy(r20, tmp_path)
    anat = sorted((root / "Training").glob("R*/sub-*/ses-1/anat"))
    truncated = truncate(next(anat[0].glob("*_T1w.nii.gz")))
    t1 = put_non_finite(next(anat[1].glob("*_T1w.nii.gz")), nan=2)
    masks = [next(a.glob("*_mask.nii.gz")) for a in anat[2:5]]
    for mask, value in zip(masks, (2, 0.999, np.nan)):
        img = nib.load(str(mask))
        data = np.asarray(img.dataobj).astype(np.float32)
        data[data > 0] = value
        nib.save(nib.Nifti1Image(data, img.affine), str(mask))
    with pytest.raises(ValueError) as e:
        atlas_datalist(root)
    msg = str(e.value)
    assert "(5 problems)" in msg
    assert all(problem in msg for problem in voxel_problems(truncated, t1, nan=2))
    for mask, value in zip(masks, ("2", "0.999", "nan")):
        assert f"{mask}: expected a binary lesion mask (values 0/1 or 0/255), found 0 (" in msg
        assert f"), {value} (" in msg.split(str(mask))[1].split("\n")[0]
    assert len(find_atlas_scans(root, read_voxels=False)) == 6  # the headers alone are fine


def test_missing_and_foreign_folders(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such folder.*common.synthetic.atlas"):
        atlas_release(tmp_path / "nope")
    (tmp_path / "other").mkdir()
    with pytest.raises(FileNotFoundError, match="expected Training/"):
        find_atlas_scans(tmp_path)


def test_synthetic_grid_determinism_and_lesions(r20, tmp_path):
    template, affine = load_template(VOXEL)
    img = nib.load(str(find_atlas_scans(r20)[0].image))
    assert img.shape == template.shape == (25, 29, 24)
    np.testing.assert_allclose(img.affine, affine)
    assert np.allclose(np.diag(affine)[:3], VOXEL)
    again = write_synthetic_atlas(tmp_path, n_subjects=2, voxel_size=VOXEL)
    for a, b in zip(find_atlas_scans(again), find_atlas_scans(r20)[:2]):
        np.testing.assert_array_equal(nib.load(str(a.image)).get_fdata(), nib.load(str(b.image)).get_fdata())
    for s in find_atlas_scans(r20):
        image = nib.load(str(s.image)).get_fdata()
        lesion = nib.load(str(s.lesions[0])).get_fdata() > 0
        brain = image > 0.3 * image.max()
        assert lesion.any()
        # T1-hypointense: the lesion is darker than the rest of the brain
        assert image[lesion].mean() < image[brain & ~lesion].mean()
