"""common.data.brats and common.synthetic.brats: layout, the 355 exception, every problem at once, headers, datalist
round trip, folds, label conversion, and the synthetic writer's layout, determinism and signal."""

from __future__ import annotations

import json
import shutil

import nibabel as nib
import numpy as np
import pytest
from monai.data import load_decathlon_datalist
from monai.transforms import LoadImaged

from common.data import (
    BRATS_MODALITIES,
    brats_datalist,
    find_brats_cases,
    kfold_split,
    write_brats_datalist,
)
from common.synthetic.brats import TRAINING_FOLDERS, VALIDATION_FOLDERS, brats_affine, write_synthetic_brats
from tests.support.damage import put_non_finite, truncate, voxel_problems

SHAPE = (48, 48, 32)
KINDS = (*BRATS_MODALITIES, "seg")


@pytest.fixture(scope="module")
def brats20(tmp_path_factory):
    return write_synthetic_brats(tmp_path_factory.mktemp("b20"), n_cases=6, shape=SHAPE, n_validation=2)


@pytest.fixture(scope="module")
def brats21(tmp_path_factory):  # the 2021 names, uncompressed .nii
    return write_synthetic_brats(
        tmp_path_factory.mktemp("b21"), n_cases=5, shape=SHAPE, release=2021, n_validation=2, compress=False
    )


def _train(root, release=2020):
    return root / TRAINING_FOLDERS[release]


def _copy(src, tmp_path):
    return shutil.copytree(src, tmp_path / src.name)


def _array(path):
    return np.asarray(nib.load(path).dataobj)


def _resave(src, dst, array=None, affine=None):
    """Write ``src``'s image (or ``array``) at ``dst`` (its suffix picks .nii or .nii.gz), with ``src``'s affine
    unless ``affine`` is given."""
    img = nib.load(src)
    nib.save(nib.Nifti1Image(_array(src) if array is None else array, img.affine if affine is None else affine), dst)


# ------------------------------------------------------------------------------------------------ synthetic writer


def test_2020_layout_is_the_release(brats20):
    train, val = _train(brats20), brats20 / VALIDATION_FOLDERS[2020]
    cases = [f"BraTS20_Training_{k:03d}" for k in range(1, 7)]
    assert sorted(p.name for p in train.iterdir()) == cases + ["name_mapping.csv", "survival_info.csv"]
    validation = ["BraTS20_Validation_001", "BraTS20_Validation_002", "survival_evaluation.csv"]
    assert sorted(p.name for p in val.iterdir()) == validation
    case = train / "BraTS20_Training_001"
    assert sorted(p.name for p in case.iterdir()) == sorted(f"BraTS20_Training_001_{k}.nii.gz" for k in KINDS)
    assert sorted(p.name for p in (val / "BraTS20_Validation_001").iterdir()) == sorted(
        f"BraTS20_Validation_001_{m}.nii.gz" for m in BRATS_MODALITIES
    )  # validation cases have no seg
    for kind in KINDS:
        img = nib.load(case / f"BraTS20_Training_001_{kind}.nii.gz")
        assert img.shape == SHAPE and img.get_data_dtype() == (np.uint8 if kind == "seg" else np.int16)
        np.testing.assert_allclose(img.affine, brats_affine(SHAPE))
    np.testing.assert_allclose(brats_affine((240, 240, 155))[:3], [[-1, 0, 0, 0], [0, -1, 0, 239], [0, 0, 1, 0]])
    rows = (train / "name_mapping.csv").read_text().splitlines()
    assert rows[0].split(",")[0] == "Grade" and rows[0].split(",")[-1] == "BraTS_2020_subject_ID"
    assert [r.split(",")[-1] for r in rows[1:]] == cases


def test_2021_ids_are_5_digit_with_gaps_and_disjoint(brats21):
    train = sorted(p.name for p in _train(brats21, 2021).iterdir())
    val = sorted(p.name for p in (brats21 / VALIDATION_FOLDERS[2021]).iterdir())
    assert len(train) == 5 and len(val) == 2 and not set(train) & set(val)
    numbers = sorted(int(n.split("_")[1]) for n in train + val)
    assert all(len(n.split("_")[1]) == 5 for n in train + val) and numbers[-1] - numbers[0] >= len(numbers)  # gaps
    assert sorted(p.name for p in (_train(brats21, 2021) / train[0]).iterdir()) == sorted(
        f"{train[0]}_{k}.nii" for k in KINDS
    )


def test_writer_is_deterministic_with_its_seed(tmp_path):
    a = write_synthetic_brats(tmp_path / "a", n_cases=1, shape=(32, 32, 24), seed=3, n_validation=1)
    b = write_synthetic_brats(tmp_path / "b", n_cases=1, shape=(32, 32, 24), seed=3, n_validation=1)
    c = write_synthetic_brats(tmp_path / "c", n_cases=1, shape=(32, 32, 24), seed=4, n_validation=1)
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert len(files) == 5 + 4 + 3  # training case, validation case, CSV side files
    assert files == sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    for f in files:
        assert (a / f).read_bytes() == (b / f).read_bytes(), f
    flair = "MICCAI_BraTS2020_TrainingData/BraTS20_Training_001/BraTS20_Training_001_flair.nii.gz"
    assert not np.array_equal(_array(a / flair), _array(c / flair))


def test_labels_are_brats_values_inside_the_skull_stripped_brain(brats20):
    sizes = []
    for case in find_brats_cases(_train(brats20)):
        seg = _array(case.seg)
        images = np.stack([_array(case.images[m]) for m in BRATS_MODALITIES])
        brain = images[0] > 0
        assert set(np.unique(seg).tolist()) <= {0, 1, 2, 4} and (seg > 0).any()
        assert (images[:, ~brain] == 0).all() and (images[:, brain] > 0).all()  # one brain mask for all modalities
        assert brain[seg > 0].all()  # tumours inside the brain
        sizes.append(int((seg > 0).sum()))
    assert max(sizes) > 2 * min(sizes)  # varied sizes


def test_contrasts_oedema_flair_bright_and_not_a_threshold(tmp_path):
    root = write_synthetic_brats(tmp_path, n_cases=3, shape=(64, 64, 40), seed=1, n_validation=0)
    flair_ratio, t2_csf, overlap = [], [], []
    for case in find_brats_cases(_train(root)):
        seg = _array(case.seg)
        flair, t1, t2 = (_array(case.images[m]).astype(np.float32) for m in ("flair", "t1", "t2"))
        brain, normal = flair > 0, (flair > 0) & (seg == 0)
        white = normal & (t1 > np.percentile(t1[normal], 60))  # T1-brightest normal tissue: white matter
        flair_ratio.append(flair[seg == 2].mean() / flair[white].mean())
        t2_csf.append(np.percentile(t2[normal], 99) / np.median(t2[white]))
        overlap.append((flair[normal] > np.percentile(flair[seg == 2], 25)).sum())
        assert brain.sum() > 0.1 * brain.size
    assert min(flair_ratio) > 1.2  # the oedema is FLAIR-bright against normal white matter
    assert min(t2_csf) > 1.5  # CSF bright on T2
    assert sum(overlap) > 0  # some normal voxels are brighter than a quarter of the oedema: no trivial threshold


def test_writer_rejects_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="release: expected 2020 or 2021, found 2019"):
        write_synthetic_brats(tmp_path, n_cases=1, shape=SHAPE, release=2019)
    with pytest.raises(ValueError, match=r"found 1, 0, \(8, 8, 8\)"):
        write_synthetic_brats(tmp_path, n_cases=1, shape=(8, 8, 8), n_validation=0)


# ------------------------------------------------------------------------------------------------ layout


def test_both_naming_schemes_and_validation_without_seg(brats20, brats21):
    for root, release, suffix in ((brats20, 2020, ".nii.gz"), (brats21, 2021, ".nii")):
        cases = find_brats_cases(_train(root, release))
        assert [c.case for c in cases] == sorted(p.name for p in _train(root, release).iterdir() if p.is_dir())
        for c in cases:
            assert list(c.images) == list(BRATS_MODALITIES)
            assert c.images["t1ce"].name == f"{c.case}_t1ce{suffix}" and c.seg.name == f"{c.case}_seg{suffix}"
        val = find_brats_cases(root / VALIDATION_FOLDERS[release], require_seg=False)
        assert len(val) == 2 and all(c.seg is None and len(c.images) == 4 for c in val)
    with pytest.raises(FileNotFoundError) as e:
        find_brats_cases(brats20 / VALIDATION_FOLDERS[2020])  # segmentation required
    msg = str(e.value)
    assert "2 problems" in msg
    for k in (1, 2):
        case = brats20 / VALIDATION_FOLDERS[2020] / f"BraTS20_Validation_{k:03d}"
        assert f"{case}/BraTS20_Validation_{k:03d}_seg.nii[.gz]: expected the segmentation of the case" in msg


def test_case_355_segmentation_name_is_accepted_there_only(brats20, tmp_path):
    train = _copy(_train(brats20), tmp_path)
    old, new = train / "BraTS20_Training_006", train / "BraTS20_Training_355"
    new.mkdir()
    for kind in BRATS_MODALITIES:
        _resave(old / f"BraTS20_Training_006_{kind}.nii.gz", new / f"BraTS20_Training_355_{kind}.nii")
    _resave(old / "BraTS20_Training_006_seg.nii.gz", new / "W39_1998.09.19_Segm.nii")
    shutil.rmtree(old)
    case = find_brats_cases(train)[-1]
    assert case.case == "BraTS20_Training_355" and case.seg == new / "W39_1998.09.19_Segm.nii"
    shutil.copy(case.seg, train / "BraTS20_Training_001" / "W39_1998.09.19_Segm.nii")
    with pytest.raises(FileNotFoundError, match=r"BraTS20_Training_001/W39_1998.09.19_Segm.nii: expected a name"):
        find_brats_cases(train)


def test_every_layout_problem_is_reported_at_once(brats20, tmp_path):
    train = _copy(_train(brats20), tmp_path)
    c = [train / f"BraTS20_Training_{k:03d}" for k in range(1, 7)]
    (c[0] / "BraTS20_Training_001_t2.nii.gz").unlink()  # missing modality
    _resave(c[1] / "BraTS20_Training_002_flair.nii.gz", c[1] / "BraTS20_Training_002_flair.nii")  # duplicate
    shutil.copy(c[3] / "BraTS20_Training_004_t1.nii.gz", c[2] / "BraTS20_Training_004_t1.nii.gz")  # other case's
    (c[2] / "BraTS20_Training_003_t1ce.nii.gz").rename(c[2] / "BraTS20_Training_003_T1CE.nii.gz")  # unexpected
    (c[3] / "BraTS20_Training_004_seg.nii.gz").unlink()  # no segmentation
    shutil.copy(c[4] / "BraTS20_Training_005_seg.nii.gz", train / "stray_seg.nii.gz")  # NIfTI outside a case
    empty = train / "BraTS20_Training_007"
    empty.mkdir()
    for ignored in (c[4] / "notes.txt", train / "README.md", c[5] / ".BraTS20_Training_006_t1.nii"):
        ignored.write_text("not a layout problem")
    with pytest.raises(FileNotFoundError) as e:
        find_brats_cases(train)
    msg = str(e.value)
    expected = [
        f"{c[0]}/BraTS20_Training_001_t2.nii[.gz]: expected the t2 image of the case, found none",
        f"{c[1]}/BraTS20_Training_002_flair.nii: expected one flair file per case, found also "
        "BraTS20_Training_002_flair.nii.gz",
        f"{c[2]}/BraTS20_Training_004_t1.nii.gz: expected a name BraTS20_Training_003_{{flair,t1,t1ce,t2,seg}}"
        ".nii[.gz], found 'BraTS20_Training_004_t1.nii.gz'",
        f"{c[2]}/BraTS20_Training_003_T1CE.nii.gz: expected a name",
        f"{c[2]}/BraTS20_Training_003_t1ce.nii[.gz]: expected the t1ce image of the case, found none",
        f"{c[3]}/BraTS20_Training_004_seg.nii[.gz]: expected the segmentation of the case (training cases need one)",
        f"{train}/stray_seg.nii.gz: expected NIfTI files only inside case folders, found one beside them",
        f"{empty}: expected case files BraTS20_Training_007_{{flair,t1,t1ce,t2,seg}}.nii[.gz], found none",
    ]
    assert f"not a BraTS-layout folder of case folders ({len(expected)} problems)" in msg
    for line in expected:
        assert line in msg
    assert "notes.txt" not in msg and "README" not in msg and ".BraTS20_Training_006_t1" not in msg
    assert "python -m common.synthetic.brats" in msg


def test_missing_folder_or_parent_of_the_case_folders_names_the_fix(brats20, tmp_path):
    with pytest.raises(FileNotFoundError, match="no such folder; generate the synthetic copy"):
        find_brats_cases(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="expected case folders .* found none"):
        find_brats_cases(tmp_path / "empty")
    parent = r"MICCAI_BraTS2020_TrainingData: expected case files .* found none \(it holds 6 folders: point dataset_dir"
    with pytest.raises(FileNotFoundError, match=parent):
        find_brats_cases(brats20)  # the folder above the case folders


def test_shape_and_affine_mismatches_are_named_per_file(brats20, tmp_path):
    train = _copy(_train(brats20), tmp_path)
    t1 = train / "BraTS20_Training_002/BraTS20_Training_002_t1.nii.gz"
    _resave(t1, t1, array=_array(t1)[:, :, :-2])  # cropped
    seg = train / "BraTS20_Training_005/BraTS20_Training_005_seg.nii.gz"
    shifted = brats_affine(SHAPE)
    shifted[0, 3] = 1.5
    _resave(seg, seg, affine=shifted)  # same grid size, moved by 1.5 mm
    flat = train / "BraTS20_Training_006/BraTS20_Training_006_flair.nii.gz"
    _resave(flat, flat, array=_array(flat)[:, :, :1].reshape(SHAPE[0], SHAPE[1], 1, 1))
    with pytest.raises(ValueError) as e:
        find_brats_cases(train)
    msg = str(e.value)
    assert "(3 problems)" in msg
    assert (
        f"{t1}: expected the shape of the other files of BraTS20_Training_002, (48, 48, 32), found (48, 48, 30)" in msg
    )
    assert f"{seg}: expected the affine of the other files of BraTS20_Training_005" in msg
    assert "differs by up to 1.5" in msg
    assert f"{flat}: expected a 3D volume (H, W, D), found shape (48, 48, 1, 1)" in msg
    assert "nib-ls" in msg


def test_unreadable_non_finite_and_foreign_label_voxels_are_named_per_file(brats20, tmp_path):
    """Every voxel is read before anything is built on the data: a truncated stream, NaN / inf and labels other than
    0, 1, 2, 4 (unrounded) in one error; with read_voxels=False only the headers are checked."""
    train = _copy(_train(brats20), tmp_path)
    flair = truncate(train / "BraTS20_Training_001/BraTS20_Training_001_flair.nii.gz")
    t2 = put_non_finite(train / "BraTS20_Training_002/BraTS20_Training_002_t2.nii.gz", nan=3)
    seg3, seg15 = (train / f"BraTS20_Training_00{i}/BraTS20_Training_00{i}_seg.nii.gz" for i in (3, 4))
    seg = _array(seg3).copy()
    seg[seg == 2] = 3  # oedema as the Decathlon numbers it
    _resave(seg3, seg3, array=seg)
    seg = _array(seg15).astype(np.float32)
    seg[0, 0, 0] = 1.5
    _resave(seg15, seg15, array=seg)
    with pytest.raises(ValueError) as e:
        find_brats_cases(train)
    msg = str(e.value)
    assert "(4 problems)" in msg
    assert all(problem in msg for problem in voxel_problems(flair, t2, nan=3))
    assert f"{seg3}: expected label values 0, 1, 2, 4 (BraTS), found also 3; label 3 is not a BraTS" in msg
    assert f"{seg15}: expected label values 0, 1, 2, 4 (BraTS), found also 1.5\n" in msg
    assert len(find_brats_cases(train, read_voxels=False)) == 6  # the headers alone are fine


# ------------------------------------------------------------------------------------------------ datalist


def test_datalist_round_trips_through_monai(brats20, tmp_path):
    root = _copy(brats20, tmp_path)  # the datalist goes beside the case folders' folder, not into the fixture
    train, val = _train(root), root / VALIDATION_FOLDERS[2020]
    path = write_brats_datalist(train, root / "datalist.json", testing_dir=val, num_folds=3, seed=2)
    stored = json.loads(path.read_text())
    assert stored["numTraining"] == 6 and stored["numTest"] == 2 and stored["modality"]["0"] == "flair"
    first = "MICCAI_BraTS2020_TrainingData/BraTS20_Training_001/BraTS20_Training_001_flair.nii.gz"
    assert stored["training"][0]["image"][0] == first  # relative to the JSON file's folder
    direct = brats_datalist(train, val, num_folds=3, seed=2)
    assert load_decathlon_datalist(path, data_list_key="training") == direct["training"]
    assert load_decathlon_datalist(path, data_list_key="testing") == direct["testing"]
    item = direct["training"][0]
    assert item["case"] == "BraTS20_Training_001" and item["label"].endswith("BraTS20_Training_001_seg.nii.gz")
    assert [p.rsplit("_", 1)[1] for p in item["image"]] == [f"{m}.nii.gz" for m in BRATS_MODALITIES]
    assert set(direct["testing"][0]) == {"image", "case"}  # no seg, no fold
    loaded = LoadImaged(["image", "label"], ensure_channel_first=True)(item)
    assert loaded["image"].shape == (4, *SHAPE) and loaded["label"].shape == (1, *SHAPE)
    assert loaded["label"].meta["filename_or_obj"] == item["label"]
    np.testing.assert_array_equal(loaded["image"][2].numpy(), _array(item["image"][2]))  # channel 2 is T1ce
    flair = brats_datalist(train, modalities=("flair",), num_folds=3)["training"][0]
    assert LoadImaged("image", ensure_channel_first=True)(flair)["image"].shape == (1, *SHAPE)


def test_folds_are_by_patient_seeded_and_the_splits_module(brats20, brats21):
    train = _train(brats20)
    items = brats_datalist(train, num_folds=3, seed=7)["training"]
    ids = [d["case"] for d in items]
    assert len(set(ids)) == 6 and sorted(d["fold"] for d in items) == [0, 0, 1, 1, 2, 2]
    for k in range(3):
        assert [d["case"] for d in items if d["fold"] == k] == kfold_split(ids, 3, k, seed=7)[1]
    assert items == brats_datalist(train, num_folds=3, seed=7)["training"]
    assert len({tuple(d["fold"] for d in brats_datalist(train, num_folds=3, seed=s)["training"]) for s in range(6)}) > 1
    items21 = brats_datalist(_train(brats21, 2021), num_folds=5)["training"]
    assert sorted(d["fold"] for d in items21) == [0, 1, 2, 3, 4]


def test_datalist_bad_arguments(brats20, tmp_path):
    train = _train(brats20)
    with pytest.raises(
        ValueError, match=r"modalities: expected distinct names among flair, t1, t1ce, t2, found \['t1', 'pd'\]"
    ):
        brats_datalist(train, modalities=("t1", "pd"))
    with pytest.raises(ValueError, match="expected at least num_folds=7 patients, found 6"):
        brats_datalist(train, num_folds=7)
    with pytest.raises(ValueError, match="expected cases other than the training cases .* found 6 of them again"):
        brats_datalist(train, testing_dir=train)
    with pytest.raises(ValueError, match="expected a datalist path outside the scanned folder"):
        write_brats_datalist(train, train / "datalist.json")
    assert not (train / "datalist.json").exists()
