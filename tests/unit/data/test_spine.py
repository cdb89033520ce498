"""The CSI 2014 and VerSe layouts (every problem at once, naming files) and the synthetic spine (MetaImage I/O:
test_metaimage.py)."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from common.data import (
    csi_datalist,
    find_csi_cases,
    read_mhd,
    split_by_fold,
    verse_datalist,
    write_mhd,
)
from common.synthetic.spine import synthetic_spine, write_synthetic_spine


def test_synthetic_spine_layout_and_anatomy(tmp_path):
    root = write_synthetic_spine(tmp_path, n_training=5, n_testing=2, shape=(24, 24, 40), scale=0.6, seed=0)
    d = csi_datalist(root, num_folds=5)
    assert d["numTraining"] == 5 and d["numTest"] == 2 and {i["fold"] for i in d["training"]} == set(range(5))
    assert [i["case"] for i in d["testing"]] == ["case6", "case7"]
    assert len(split_by_fold(d["training"], "train", -1, 0)) == 4  # CSI's test set is test/: no fold held out
    counts = set()
    for item in d["training"]:
        image, _ = read_mhd(item["image"])
        label, _ = read_mhd(item["label"])
        values = sorted(set(np.unique(label)) - {0})
        counts.add(len(values))
        assert values == list(range(values[0], values[0] + len(values)))  # consecutive anatomical numbers
        assert (label[..., -1] == values[0]).any() and (label[..., 0] == values[-1]).any()  # cut by both edges
        assert np.median(image[label > 0]) > 150 and np.median(image[label == 0]) < 100  # bone over soft tissue
        for v in values:
            assert ndimage.label(label == v)[1] == 1  # one connected vertebra per label
    assert len(counts) > 1  # the count varies


def test_synthetic_spine_is_seeded():
    a = synthetic_spine(np.random.default_rng(3), (20, 20, 30), (1.0, 1.0, 1.5), 0.6)
    b = synthetic_spine(np.random.default_rng(3), (20, 20, 30), (1.0, 1.0, 1.5), 0.6)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))


def test_csi_layout_problems_all_at_once(tmp_path):
    root = write_synthetic_spine(tmp_path, n_training=3, n_testing=1, shape=(16, 16, 20), scale=0.5)
    (root / "train" / "seg" / "case1_label.mhd").unlink()  # image without label
    (root / "train" / "img" / "case2.raw").unlink()  # header without data
    (root / "train" / "img" / "notes.txt").write_text("x")  # stray file
    with pytest.raises(ValueError) as e:
        find_csi_cases(root)
    msg = str(e.value)
    assert "(3 problems)" in msg
    assert "case1.mhd: expected its label" in msg and "case1_label.mhd" in msg
    assert "case2.mhd: expected its data file" in msg and "notes.txt: expected only .mhd/.raw files" in msg


def test_csi_flat_folder(tmp_path):
    write_mhd(tmp_path / "case1.mhd", np.zeros((4, 4, 4), np.int16), (1, 1, 1))
    write_mhd(tmp_path / "case1_label.mhd", np.zeros((4, 4, 4), np.uint8), (1, 1, 1))
    found = find_csi_cases(tmp_path)
    assert list(found) == ["train"] and found["train"][0]["case"] == "case1"
    with pytest.raises(FileNotFoundError, match="expected the CSI 2014 folder"):
        find_csi_cases(tmp_path / "missing")


def _nifti(path, value=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.full((3, 3, 3), value, np.float64), np.eye(4)), path)


def test_verse_layout_and_problems(tmp_path):
    for sub, scan in [
        ("sub-verse004", "sub-verse004"),
        ("sub-gl003", "sub-gl003_dir-ax"),
        ("sub-gl003", "sub-gl003_dir-sag"),
    ]:
        _nifti(tmp_path / "rawdata" / sub / f"{scan}_ct.nii.gz")
        _nifti(tmp_path / "derivatives" / sub / f"{scan}_seg-vert_msk.nii.gz", 28)
    for i in range(3):
        _nifti(tmp_path / "rawdata" / f"sub-verse10{i}" / f"sub-verse10{i}_ct.nii.gz")
        _nifti(tmp_path / "derivatives" / f"sub-verse10{i}" / f"sub-verse10{i}_seg-vert_msk.nii.gz")
    d = verse_datalist(tmp_path, num_folds=5)
    assert d["numTraining"] == 6 and d["order"][19] == 28
    gl = [i for i in d["training"] if i["case"] == "sub-gl003"]
    assert len(gl) == 2 and gl[0]["fold"] == gl[1]["fold"]  # one subject's scans stay in one fold
    # problems, all at once
    (tmp_path / "derivatives" / "sub-verse004" / "sub-verse004_seg-vert_msk.nii.gz").unlink()
    _nifti(tmp_path / "derivatives" / "sub-verse999" / "sub-verse999_seg-vert_msk.nii.gz")
    _nifti(tmp_path / "rawdata" / "sub-verse100" / "verse100_ct.nii.gz")
    with pytest.raises(ValueError) as e:
        verse_datalist(tmp_path)
    msg = str(e.value)
    assert "(3 problems)" in msg
    assert "sub-verse004_ct.nii.gz: expected its mask" in msg
    assert "sub-verse999_seg-vert_msk.nii.gz: expected its CT" in msg
    assert "verse100_ct.nii.gz: expected a name sub-verse100" in msg
    with pytest.raises(ValueError, match="expected the VerSe folder rawdata/"):
        verse_datalist(tmp_path / "derivatives")
