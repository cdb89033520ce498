"""common.data.acdc: the synthetic writer's layout and anatomy, the loader, splits and bad-input errors."""

from __future__ import annotations

import shutil

import nibabel as nib
import numpy as np
import pytest

from common.data import acdc_frames, acdc_slices, find_acdc_frames, read_info_cfg
from common.synthetic import write_synthetic_acdc


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
