"""common.data.lgg: the synthetic writer's kaggle_3m layout and lesions, the loader, splits, mask writer, bad input."""

from __future__ import annotations

import csv
import shutil

import nibabel as nib
import numpy as np
import pytest
import tifffile

from common.data import (
    DATA_CSV_COLUMNS,
    find_lgg_patients,
    lgg_patients,
    lgg_slices,
    lgg_volumes,
    patient_id,
    scale_percentiles,
)
from common.synthetic.lgg import write_synthetic_lgg
from common.transforms import SaveLggMasksd

SIZE = 64


@pytest.fixture(scope="module")
def lgg(tmp_path_factory):
    return write_synthetic_lgg(tmp_path_factory.mktemp("lgg"), n_patients=6, seed=0, size=SIZE, slices=(6, 8))


def _copy(lgg, tmp_path):
    return shutil.copytree(lgg, tmp_path / "copy")


def test_layout_matches_kaggle_3m(lgg):
    root = lgg / "kaggle_3m"
    folders = sorted(p for p in root.iterdir() if p.is_dir())
    assert len(folders) == 6 and all(patient_id(f.name) != f.name for f in folders)  # TCGA_XX_NNNN_YYYYMMDD
    rows = list(csv.reader(open(root / "data.csv")))
    assert tuple(rows[0]) == DATA_CSV_COLUMNS
    assert sorted(r[0] for r in rows[1:]) == sorted(patient_id(f.name) for f in folders)
    for folder in folders:
        images = sorted(p for p in folder.glob("*.tif") if not p.name.endswith("_mask.tif"))
        assert 6 <= len(images) <= 8
        for image in images:
            img, mask = tifffile.imread(image), tifffile.imread(image.with_name(image.stem + "_mask.tif"))
            assert img.shape == (SIZE, SIZE, 3) and img.dtype == np.uint8
            assert mask.shape == (SIZE, SIZE) and mask.dtype == np.uint8 and set(np.unique(mask)) <= {0, 255}


def test_lesions_are_flair_hyperintense_and_absent_from_many_slices(lgg):
    volumes = lgg_volumes(lgg, "all", image_size=SIZE)
    tumour_slices = sum(int((v["label"].sum(axis=(0, 1, 2)) > 0).sum()) for v in volumes)
    total = sum(v["label"].shape[-1] for v in volumes)
    assert 0.1 * total < tumour_slices < 0.8 * total  # many slices without tumour
    sizes = [int(v["label"].sum()) for v in volumes]
    assert all(s > 0 for s in sizes) and max(sizes) > 2 * min(sizes)  # every patient has one, of varying size
    for v in volumes:
        flair, lesion = v["image"][1], v["label"][0] > 0
        brain = (flair > 0.2) & ~lesion
        assert flair[lesion].mean() > flair[brain].mean() + 0.05


def test_seeded_writer_is_reproducible(tmp_path):
    a = write_synthetic_lgg(tmp_path / "a", n_patients=1, seed=3, size=32, slices=(3, 3))
    b = write_synthetic_lgg(tmp_path / "b", n_patients=1, seed=3, size=32, slices=(3, 3))
    files = sorted((a / "kaggle_3m").rglob("*.tif"))
    assert len(files) == 6
    for f in files:
        np.testing.assert_array_equal(tifffile.imread(f), tifffile.imread(b / f.relative_to(a)))


def test_slices_are_ordered_by_number_not_lexically(tmp_path):
    root = write_synthetic_lgg(tmp_path, n_patients=1, seed=0, size=32, slices=(12, 12))
    (patient,) = find_lgg_patients(root)
    assert [s.number for s in patient.slices] == list(range(1, 13))  # lexical order would put 10, 11, 12 after 1
    (volume,) = lgg_volumes(root, "all", image_size=32)
    assert volume["slices"].tolist() == list(range(1, 13))
    for k, s in enumerate(patient.slices):
        np.testing.assert_array_equal(volume["label"][0, ..., k], tifffile.imread(s.mask) > 0)


def test_dataset_dir_may_be_kaggle_3m_itself_or_one_patient(lgg):
    names = [p.name for p in find_lgg_patients(lgg)]
    assert [p.name for p in find_lgg_patients(lgg / "kaggle_3m")] == names
    single = find_lgg_patients(lgg / "kaggle_3m" / names[0])
    assert [p.name for p in single] == names[:1]


def test_percentile_scaling_is_per_channel_and_ignores_scanner_gain():
    rng = np.random.default_rng(0)
    volume = (
        rng.uniform(0, 1, (3, 8, 8, 5)).astype(np.float32) * np.array([10, 200, 3], np.float32)[:, None, None, None]
    )
    scaled = np.asarray(scale_percentiles(volume))
    assert scaled.dtype == np.float32 and scaled.min() == 0 and scaled.max() == 1
    for c in range(3):
        assert np.isclose(np.mean(scaled[c] == 0), 0.1, atol=0.02)  # below the 10th percentile -> 0
        assert np.isclose(np.mean(scaled[c] == 1), 0.01, atol=0.02)  # above the 99th -> 1
    np.testing.assert_allclose(np.asarray(scale_percentiles(volume * 2.5)), scaled, atol=1e-5)


def test_loader_scales_each_patient_to_unit_range(lgg):
    for v in lgg_volumes(lgg, "all", image_size=SIZE):
        assert v["image"].dtype == np.float32 and v["image"].shape[:3] == (3, SIZE, SIZE)
        for c in range(3):
            assert v["image"][c].min() == 0 and v["image"][c].max() == 1
            assert np.isclose(np.percentile(v["image"][c], 99), 1.0, atol=1e-3)
        assert v["label"].dtype == np.uint8 and set(np.unique(v["label"])) <= {0, 1}


def test_slices_are_the_volumes_cut(lgg):
    volumes = {v["patient"]: v for v in lgg_volumes(lgg, "val", num_folds=3, image_size=SIZE)}
    items = lgg_slices(lgg, "val", num_folds=3, image_size=SIZE)
    assert len(items) == sum(v["image"].shape[-1] for v in volumes.values())
    for d in items:
        v = volumes[d["patient"]]
        k = v["slices"].tolist().index(d["slice"])
        np.testing.assert_array_equal(d["image"], v["image"][..., k])
        assert d["image"].shape == (3, SIZE, SIZE) and d["label"].shape == (1, SIZE, SIZE)


@pytest.mark.parametrize("num_folds", [2, 3, 5])
def test_train_val_test_are_disjoint_by_patient_and_cover_it(lgg, tmp_path, num_folds):
    root = _copy(lgg, tmp_path)
    first = sorted((root / "kaggle_3m").iterdir())[0]
    shutil.copytree(first, first.with_name(patient_id(first.name) + "_20110101"))  # same patient, second date
    ids = {p.id for p in find_lgg_patients(root)}
    assert len(ids) == 6 and len(find_lgg_patients(root)) == 7
    tested = []
    for fold in range(num_folds):
        train, val, test = (
            {p.id for p in lgg_patients(root, split, num_folds, fold, seed=1)} for split in ("train", "val", "test")
        )
        assert train and val and test and test != val
        assert not train & val and not train & test and not val & test and train | val | test == ids
        dated = [p.name for p in lgg_patients(root, "train", num_folds, fold, seed=1) if p.id == patient_id(first.name)]
        assert len(dated) in (0, 2)  # both dated folders of a patient go to the same split
        tested += sorted(test)
    assert sorted(tested) == sorted(ids)  # each patient tested exactly once over the folds
    for split in ("train", "val", "test"):  # seeded: equal arguments give equal splits, another seed another
        assert [p.name for p in lgg_patients(root, split, num_folds, 0, seed=1)] == [
            p.name for p in lgg_patients(root, split, num_folds, 0, seed=1)
        ]
    assert len({tuple(p.id for p in lgg_patients(root, "test", 3, 0, seed=s)) for s in range(5)}) > 1


def test_val_fraction_sizes_the_validation_split(lgg):
    assert len(lgg_patients(lgg, "test", num_folds=3)) == 2
    assert len(lgg_patients(lgg, "val", num_folds=3, val_fraction=0.2)) == 1  # max(1, round(0.2 * 4))
    assert len(lgg_patients(lgg, "val", num_folds=3, val_fraction=0.5)) == 2
    assert len(lgg_patients(lgg, "train", num_folds=3, val_fraction=0.5)) == 2
    items = lgg_slices(lgg, "train", num_folds=3, image_size=SIZE, val_fraction=0.5)
    assert {d["patient"] for d in items} == {p.name for p in lgg_patients(lgg, "train", 3, val_fraction=0.5)}


def test_mask_writer_round_trips_in_kaggle_3m_form(tmp_path):
    mask = np.zeros((1, 16, 16, 3), np.float32)
    mask[0, 4:8, 4:8, 1] = 1
    SaveLggMasksd("pred", tmp_path, nifti=True)(
        {"pred": mask, "patient": "TCGA_XX_0001_20000101", "slices": np.array([1, 2, 10])}
    )
    folder = tmp_path / "TCGA_XX_0001_20000101"
    assert {p.name for p in folder.iterdir()} == {f"TCGA_XX_0001_20000101_{n}_mask.tif" for n in (1, 2, 10)}
    written = tifffile.imread(folder / "TCGA_XX_0001_20000101_2_mask.tif")
    assert written.dtype == np.uint8 and written.shape == (16, 16) and written.sum() == 16 * 255
    assert tifffile.imread(folder / "TCGA_XX_0001_20000101_10_mask.tif").sum() == 0
    volume = nib.load(tmp_path / "TCGA_XX_0001_20000101.nii.gz")
    assert volume.shape == (16, 16, 3) and np.asarray(volume.dataobj).sum() == 16


# ------------------------------------------------------------------------------------------------ bad input


def test_missing_dataset_dir_names_the_fix(tmp_path):
    with pytest.raises(FileNotFoundError, match="python -m common.synthetic.lgg"):
        find_lgg_patients(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="expected patient folders"):
        find_lgg_patients(tmp_path / "empty")


def test_every_layout_problem_is_reported(lgg, tmp_path):
    root = _copy(lgg, tmp_path) / "kaggle_3m"
    folders = sorted(p for p in root.iterdir() if p.is_dir())
    lost = folders[0] / f"{folders[0].name}_2_mask.tif"
    lost.unlink()
    (root / "TCGA_XX_9999_20000101").mkdir()  # a patient folder with no slices
    (folders[1] / "notes.tif").write_bytes(b"")
    with pytest.raises(FileNotFoundError) as e:
        find_lgg_patients(root)
    msg = str(e.value)
    assert "3 problems" in msg
    assert f"{folders[0] / folders[0].name}_2.tif: expected its mask {lost.name} beside it, found none" in msg
    assert "TCGA_XX_9999_20000101: expected slices <patient>_<n>.tif in the patient folder, found none" in msg
    assert "notes.tif: expected a name <patient>_<n>.tif or <patient>_<n>_mask.tif" in msg
    assert len(find_lgg_patients(lgg, masks=False)) == 6  # inference needs no masks


def test_bad_slice_content_is_named_with_expected_and_found(lgg, tmp_path):
    root = _copy(lgg, tmp_path) / "kaggle_3m"
    folders = sorted(p for p in root.iterdir() if p.is_dir())
    grey = folders[0] / f"{folders[0].name}_1.tif"
    tifffile.imwrite(grey, np.zeros((SIZE, SIZE), np.uint8))  # not RGB
    empty = folders[1] / f"{folders[1].name}_1.tif"
    empty.write_bytes(b"")
    garbage = folders[2] / f"{folders[2].name}_1_mask.tif"
    garbage.write_bytes(b"this is not a tiff file")
    with pytest.raises(ValueError) as e:
        lgg_volumes(root, "all", image_size=SIZE)
    msg = str(e.value)
    assert "3 bad files (unreadable, mis-shaped or with unexpected values)" in msg
    assert (
        f"{grey}: expected an RGB slice (pre-contrast, FLAIR, post-contrast) of shape (64, 64, 3), found shape "
        "(64, 64) (uint8)" in msg
    )
    assert f"{empty}: expected an RGB slice (pre-contrast, FLAIR, post-contrast), found an empty file (0 bytes)" in msg
    assert f"{garbage}: expected a single-channel 0/255 mask, found unreadable content" in msg


def test_wrong_slice_size_names_the_expected_size(lgg):
    with pytest.raises(
        ValueError, match=r"expected an RGB slice .* of shape \(256, 256, 3\), found shape \(64, 64, 3\)"
    ):
        lgg_volumes(lgg, "all")  # the 64x64 test copy read with the real size


def test_bad_arguments(lgg, tmp_path):
    with pytest.raises(ValueError, match="split: expected one of train, val, test or all, found 'validation'"):
        lgg_patients(lgg, "validation")
    with pytest.raises(ValueError, match=r"val_fraction: expected a fraction in \(0, 1\), found 1.5"):
        lgg_patients(lgg, "train", val_fraction=1.5)
    with pytest.raises(ValueError, match="expected at least 2 patients outside test fold 0 of 2"):
        lgg_patients(write_synthetic_lgg(tmp_path / "two", n_patients=2, size=32, slices=(1, 1)), "train", 2)
    with pytest.raises(ValueError, match=r"slices \(min, max\) with 1 <= min <= max, found 2, 64, \(5, 3\)"):
        write_synthetic_lgg(tmp_path, n_patients=2, size=64, slices=(5, 3))


def _masks(root):
    return sorted((root / "kaggle_3m").glob("*/*_mask.tif"))


def _with_tumour(masks):
    return [m for m in masks if tifffile.imread(m).any()]


def test_mask_with_other_values_is_refused_not_thresholded(lgg, tmp_path):
    root = _copy(lgg, tmp_path)
    first, second = _with_tumour(_masks(root))[:2]
    three = tifffile.imread(first)
    three[three == 255] = 1
    three[:2, :2] = 2
    tifffile.imwrite(first, three)  # 0/1/2: thresholding at 128 would erase this tumour
    soft = tifffile.imread(second)
    soft[soft == 255] = 128  # a smoothed edge value
    tifffile.imwrite(second, soft)
    with pytest.raises(ValueError) as e:
        lgg_volumes(root, "all", image_size=SIZE)
    msg = str(e.value)
    assert "2 bad files" in msg
    assert f"{first}: expected mask values 0 and 255 (kaggle_3m), found 0, 1, 2 (uint8)" in msg
    assert f"{second}: expected mask values 0 and 255 (kaggle_3m), found 0, 128 (uint8)" in msg
    assert "Hint" not in msg  # neither mask is a clean 0/1 mask


def test_mixed_0_255_and_0_1_masks_are_refused_naming_every_0_1_mask(lgg, tmp_path):
    root = _copy(lgg, tmp_path)
    tumour = _with_tumour(_masks(root))
    converted = tumour[::3]  # one mask in three rewritten as 0/1, across patients
    for m in converted:
        tifffile.imwrite(m, (tifffile.imread(m) > 0).astype(np.uint8))
    with pytest.raises(ValueError) as e:
        lgg_slices(root, "train", num_folds=2, image_size=SIZE)  # any split: train reads the train patients only
    msg = str(e.value)
    train = {p.name for p in lgg_patients(root, "train", num_folds=2)}
    bad = [m for m in converted if m.parent.name in train]
    assert bad and f"{len(bad)} bad files" in msg
    for m in bad:
        assert f"{m}: expected mask values 0 and 255 (kaggle_3m), found 0, 1 (uint8)" in msg
    assert f"Hint: {len(bad)} masks hold 0/1, not the kaggle_3m 0/255" in msg


def test_a_0_1_data_set_is_refused_with_the_conversion_hint(lgg, tmp_path):
    root = _copy(lgg, tmp_path)
    masks = _masks(root)
    for m in masks:
        tifffile.imwrite(m, (tifffile.imread(m) > 0).astype(np.uint8))
    tumour = _with_tumour(masks)
    with pytest.raises(ValueError) as e:
        lgg_volumes(root, "all", image_size=SIZE)
    msg = str(e.value)
    assert f"LGG data: {len(tumour)} bad files" in msg
    assert f"Hint: {len(tumour)} masks hold 0/1" in msg and "convert it (mask * 255)" in msg
    assert len(lgg_volumes(root, "all", image_size=SIZE, masks=False)) == 6  # inference never reads the masks


def test_nan_image_and_bad_mask_are_reported_together_with_shape_problems(lgg, tmp_path):
    root = _copy(lgg, tmp_path)
    folders = sorted(p for p in (root / "kaggle_3m").iterdir() if p.is_dir())
    nan = folders[0] / f"{folders[0].name}_2.tif"
    image = tifffile.imread(nan).astype(np.float32)
    image[3, 4, 1] = np.nan
    tifffile.imwrite(nan, image)
    small = folders[1] / f"{folders[1].name}_1_mask.tif"
    tifffile.imwrite(small, np.zeros((SIZE // 2, SIZE // 2), np.uint8))
    two = folders[2] / f"{folders[2].name}_1_mask.tif"
    tifffile.imwrite(two, np.full((SIZE, SIZE), 2, np.uint8))
    with pytest.raises(ValueError) as e:
        lgg_volumes(root, "all", image_size=SIZE)
    msg = str(e.value)
    assert "3 bad files" in msg
    assert f"{nan}: expected finite intensities, found 1 NaN/inf" in msg
    assert f"{small}: expected a single-channel 0/255 mask of shape (64, 64), found shape (32, 32) (uint8)" in msg
    assert f"{two}: expected mask values 0 and 255 (kaggle_3m), found 2 (uint8)" in msg
