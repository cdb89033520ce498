"""common.data.acdc: the synthetic writer's layout and anatomy, the loader, splits and bad-input errors."""

from __future__ import annotations

import shutil

import nibabel as nib
import numpy as np
import pytest

from common.data import acdc_frames, acdc_slices, find_acdc_frames, load_acdc_slices, read_info_cfg
from common.synthetic.acdc import write_synthetic_acdc


@pytest.fixture(scope="module")
def acdc(tmp_path_factory):
    return write_synthetic_acdc(tmp_path_factory.mktemp("acdc"), n_training=5, n_testing=2, seed=0)


def test_layout_matches_acdc(acdc):
    patient = acdc / "training" / "patient001"
    info = read_info_cfg(patient / "Info.cfg")
    assert set(info) == {"ED", "ES", "Group", "Height", "NbFrame", "Weight"}
    ed, es, n_t = int(info["ED"]), int(info["ES"]), int(info["NbFrame"])
    four_d = nib.load(patient / "patient001_4d.nii.gz")
    assert four_d.ndim == 4 and four_d.shape[-1] == n_t
    for f in (ed, es):
        frame = nib.load(patient / f"patient001_frame{f:02d}.nii.gz")
        gt = nib.load(patient / f"patient001_frame{f:02d}_gt.nii.gz")
        assert frame.shape == gt.shape == four_d.shape[:3]
        np.testing.assert_array_equal(np.asarray(frame.dataobj), np.asarray(four_d.dataobj)[..., f - 1])
        assert set(np.unique(np.asarray(gt.dataobj))) == {0, 1, 2, 3}
        assert 1.0 < frame.header.get_zooms()[0] < 2.0 and 5.0 <= frame.header.get_zooms()[2] <= 10.0
    assert sorted(p.name for p in (acdc / "testing").iterdir()) == ["patient101", "patient102"]


def test_anatomy_is_plausible(acdc):
    gt_ed = np.asarray(nib.load(acdc / "training/patient001/patient001_frame01_gt.nii.gz").dataobj)
    es = int(read_info_cfg(acdc / "training/patient001/Info.cfg")["ES"])
    gt_es = np.asarray(nib.load(acdc / f"training/patient001/patient001_frame{es:02d}_gt.nii.gz").dataobj)
    assert (gt_es == 3).sum() < 0.8 * (gt_ed == 3).sum()  # the LV cavity contracts at end-systole
    img = np.asarray(nib.load(acdc / "training/patient001/patient001_frame01.nii.gz").dataobj).astype(float)
    assert img[gt_ed == 3].mean() > 2 * img[gt_ed == 2].mean()  # bright blood pool, dark myocardium


def test_seeded_writer_is_reproducible(tmp_path):
    a = write_synthetic_acdc(tmp_path / "a", 1, 0, seed=3)
    b = write_synthetic_acdc(tmp_path / "b", 1, 0, seed=3)
    for name in ("patient001_frame01.nii.gz", "patient001_frame01_gt.nii.gz"):
        np.testing.assert_array_equal(
            np.asarray(nib.load(a / "training/patient001" / name).dataobj),
            np.asarray(nib.load(b / "training/patient001" / name).dataobj),
        )


def test_slices_are_resized_magnitudes(acdc):
    items = acdc_slices(acdc, "test", spatial_size=64)
    assert {d["patient"] for d in items} == {"patient101", "patient102"}
    for d in items:
        assert d["image"].shape == d["label"].shape == (1, 64, 64) and d["image"].dtype == np.float32
        assert d["image"].min() >= 0 and d["image"].max() > 100  # magnitude at scanner scale: k-space acts on it
        assert set(np.unique(d["label"])) <= {0, 1, 2, 3}
    assert any(set(np.unique(d["label"])) == {0, 1, 2, 3} for d in items)


def test_patient_level_splits(acdc):
    train = {f.patient for f in acdc_frames(acdc, "train", num_folds=5, fold=0)}
    val = {f.patient for f in acdc_frames(acdc, "val", num_folds=5, fold=0)}
    assert len(val) == 1 and not train & val and len(train | val) == 5


def test_missing_dataset_dir_names_the_fix(tmp_path):
    with pytest.raises(FileNotFoundError, match="python -m common.synthetic.acdc"):
        find_acdc_frames(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="expected patientNNN folders, found none"):
        find_acdc_frames(tmp_path / "empty")


def test_every_layout_problem_is_reported(acdc, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(acdc / "training", bad / "training")
    (bad / "training/patient001/Info.cfg").unlink()
    (bad / "training/patient002/patient002_frame01_gt.nii.gz").unlink()
    with pytest.raises(FileNotFoundError) as e:
        find_acdc_frames(bad, ("training",))
    msg = str(e.value)
    assert "2 problems" in msg
    assert "patient001/Info.cfg: expected the patient's Info.cfg" in msg
    assert "patient002_frame01_gt.nii.gz: expected the ED ground truth (_gt), found no file" in msg


def test_corrupt_nifti_is_named(acdc, tmp_path):
    bad = tmp_path / "corrupt"
    shutil.copytree(acdc / "testing", bad / "testing")
    (bad / "testing/patient101/patient101_frame01.nii.gz").write_bytes(b"\x1f\x8b not really gzip")
    with pytest.raises(ValueError, match="patient101_frame01.nii.gz: expected a readable NIfTI volume"):
        acdc_slices(bad, "test", spatial_size=32)


def test_label_shape_mismatch_is_named(acdc, tmp_path):
    bad = tmp_path / "mismatch"
    shutil.copytree(acdc / "testing", bad / "testing")
    gt = bad / "testing/patient102/patient102_frame01_gt.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((10, 10, 3), np.uint8), np.eye(4)), str(gt))
    with pytest.raises(ValueError, match=r"patient102_frame01_gt.nii.gz: expected the shape of its image"):
        acdc_slices(bad, "test", spatial_size=32)


def _rewrite(path, array):
    """Save ``array`` over the NIfTI at ``path``, keeping its affine and header (so only the values change)."""
    old = nib.load(str(path))
    img = nib.Nifti1Image(array, old.affine)
    img.header.set_zooms(old.header.get_zooms()[: array.ndim])
    nib.save(img, str(path))


def test_every_bad_value_and_shape_is_reported_at_once(acdc, tmp_path):
    bad = tmp_path / "values"
    shutil.copytree(acdc / "training", bad / "training")
    p = bad / "training"
    gt = p / "patient001/patient001_frame01_gt.nii.gz"
    label = np.asarray(nib.load(gt).dataobj).astype(np.float32)
    label[label == 1] = 1.5  # a float label between classes: not rounded silently
    _rewrite(gt, label)
    four = next(p.glob("patient002/patient002_frame[0-9][0-9]_gt.nii.gz"))
    label = np.asarray(nib.load(four).dataobj).copy()
    label[0, 0, 0] = 4
    _rewrite(four, label)
    shape = p / "patient003/patient003_frame01_gt.nii.gz"
    _rewrite(shape, np.zeros((10, 10, 3), np.uint8))
    shape2 = p / "patient004/patient004_frame01_gt.nii.gz"
    _rewrite(shape2, np.zeros((12, 12, 2), np.uint8))
    nan = p / "patient005/patient005_frame01.nii.gz"
    image = np.asarray(nib.load(nan).dataobj).astype(np.float32)
    image[5, 5, 0] = np.nan
    _rewrite(nan, image)
    with pytest.raises(ValueError) as e:
        load_acdc_slices(find_acdc_frames(bad, ("training",)), spatial_size=32)
    msg = str(e.value)
    assert "ACDC data: 5 problems" in msg
    assert f"{gt}: expected label values in {{0, 1, 2, 3}}, found also 1.5 (float32)" in msg
    assert f"{four}: expected label values in {{0, 1, 2, 3}}, found also 4" in msg
    assert f"{shape}: expected the shape of its image" in msg and "found (10, 10, 3)" in msg
    assert f"{shape2}: expected the shape of its image" in msg and "found (12, 12, 2)" in msg
    assert f"{nan}: expected finite intensities, found 1 NaN/inf" in msg


def test_unreadable_and_non_3d_files_are_reported_with_the_others(acdc, tmp_path):
    bad = tmp_path / "unreadable"
    shutil.copytree(acdc / "testing", bad / "testing")
    corrupt = bad / "testing/patient101/patient101_frame01.nii.gz"
    corrupt.write_bytes(b"\x1f\x8b not really gzip")
    flat = bad / "testing/patient102/patient102_frame01_gt.nii.gz"
    _rewrite(flat, np.zeros((10, 10), np.uint8))
    with pytest.raises(ValueError) as e:
        acdc_slices(bad, "test", spatial_size=32)
    msg = str(e.value)
    assert "ACDC data: 2 problems" in msg
    assert f"{corrupt}: expected a readable NIfTI volume, found unreadable content" in msg
    assert f"{flat}: expected a 3D short-axis stack (H, W, slices), found shape (10, 10)" in msg
