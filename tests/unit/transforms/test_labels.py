"""ConvertBratsLabels(d): BraTS labels 0/1/2/4 to tumour-region channels, and the refusal of other values."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from monai.transforms import ConvertToMultiChannelBasedOnBratsClasses, LoadImaged

from common.transforms import ConvertBratsLabels, ConvertBratsLabelsd


def _labels():
    seg = np.zeros((1, 4, 3, 2), np.float32)
    seg[0, 0, :, 0] = [1, 2, 4]
    seg[0, 1, :, 1] = [4, 4, 2]
    return seg


def test_label_conversion_matches_a_hand_computed_reference():
    seg = _labels()
    wt, tc, et = np.zeros((3, 4, 3, 2), np.float32)
    wt[0, :, 0] = [1, 1, 1]
    wt[1, :, 1] = [1, 1, 1]
    tc[0, :, 0] = [1, 0, 1]
    tc[1, :, 1] = [1, 1, 0]
    et[0, :, 0] = [0, 0, 1]
    et[1, :, 1] = [1, 1, 0]
    out = ConvertBratsLabels()(seg)
    assert isinstance(out, np.ndarray) and out.dtype == np.float32 and out.shape == (3, 4, 3, 2)
    np.testing.assert_array_equal(out, np.stack([wt[None], tc[None], et[None]])[:, 0])
    np.testing.assert_array_equal(ConvertBratsLabels(("WT",))(torch.as_tensor(seg)).numpy(), wt[None])
    monai_order = ConvertBratsLabels(("TC", "WT", "ET"))(seg)
    np.testing.assert_array_equal(monai_order, ConvertToMultiChannelBasedOnBratsClasses()(seg).astype(np.float32))
    meta = MetaTensor(torch.as_tensor(seg), affine=torch.eye(4) * 2, meta={"filename_or_obj": "a_seg.nii.gz"})
    d = ConvertBratsLabelsd("label", regions=("ET", "WT"))({"label": meta, "case": "a"})
    assert isinstance(d["label"], MetaTensor) and d["label"].meta["filename_or_obj"] == "a_seg.nii.gz"
    np.testing.assert_array_equal(d["label"].numpy(), np.stack([et, wt]))
    assert d["case"] == "a" and torch.equal(d["label"].affine, meta.affine)


def test_unexpected_labels_are_refused_naming_the_file(tmp_path):
    seg = _labels()
    seg[0, 2, 0, 0] = 3
    seg[0, 3, :2, 1] = 1.5
    with pytest.raises(ValueError) as e:
        ConvertBratsLabels()(MetaTensor(torch.as_tensor(seg), meta={"filename_or_obj": "/data/x_seg.nii"}))
    msg = str(e.value)
    assert msg.startswith("/data/x_seg.nii: expected BraTS labels 0, 1, 2, 4 only, found also 1.5 (2 voxels), 3 (1 ")
    assert "Medical Segmentation Decathlon" in msg and "BraTS 2023" in msg  # label 3's meanings elsewhere
    with pytest.raises(ValueError, match=r"^label array: expected BraTS labels 0, 1, 2, 4 only, found also nan"):
        ConvertBratsLabels()(np.full((1, 2, 2, 2), np.nan, np.float32))
    path = tmp_path / "BraTS20_Training_001_seg.nii.gz"
    label = np.zeros((6, 5, 4), np.uint8)
    label[1:3, 1:3, 1:3] = 2
    label[2, 2, 2] = 3  # enhancing coded as in other releases
    nib.save(nib.Nifti1Image(label, np.eye(4)), path)
    loaded = LoadImaged("label", ensure_channel_first=True)({"label": str(path)})
    with pytest.raises(ValueError, match=rf"^{path}: expected BraTS labels 0, 1, 2, 4 only, found also 3 \("):
        ConvertBratsLabelsd("label")(loaded)


def test_label_conversion_bad_arguments():
    with pytest.raises(ValueError, match=r"regions: expected distinct names among WT, TC, ET, found \['WT', 'NCR'\]"):
        ConvertBratsLabels(("WT", "NCR"))
    with pytest.raises(ValueError, match=r"regions: .* found \[\]"):
        ConvertBratsLabelsd("label", regions=())
    with pytest.raises(
        ValueError, match=r"expected a one-channel label \(1, H, W\[, D\]\), found shape \(2, 4, 3, 2\)"
    ):
        ConvertBratsLabels()(np.zeros((2, 4, 3, 2)))
