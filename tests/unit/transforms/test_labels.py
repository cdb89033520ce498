"""ConvertBratsLabels(d): BraTS labels 0/1/2/4 to tumour-region channels, and the refusal of other values;
MergeLesionMasks(d): several binary lesion masks merged, non-binary ones refused naming the file."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from monai.transforms import ConvertToMultiChannelBasedOnBratsClasses, LoadImaged

from common.transforms import ConvertBratsLabels, ConvertBratsLabelsd, MergeLesionMasks, MergeLesionMasksd


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


def test_merge_lesion_masks_union_both_storages_and_meta():
    a = np.zeros((2, 4, 5, 6), np.float32)
    a[0, 1, 1, 1] = 1
    a[1, 2, 2, 2] = 255  # a 0/255 copy beside a 0/1 one
    a[1, 1, 1, 1] = 255  # overlap
    img = MetaTensor(torch.as_tensor(a), meta={"filename_or_obj": "m1.nii.gz"})
    out = MergeLesionMasks()(img)
    assert isinstance(out, MetaTensor) and out.shape == (1, 4, 5, 6) and out.dtype == torch.float32
    assert out.meta["filename_or_obj"] == "m1.nii.gz"
    np.testing.assert_array_equal(out[0].numpy(), (a > 0).any(0))
    d = MergeLesionMasksd(keys="label", files_key="files")({"label": img, "files": ["m1.nii.gz", "m2.nii.gz"]})
    np.testing.assert_array_equal(d["label"].numpy(), out.numpy())
    assert MergeLesionMasks()(np.zeros((1, 3, 3, 3), np.uint8)).dtype == np.uint8  # numpy in, numpy out


@pytest.mark.parametrize("bad", [0.5, 2.0, float("nan")])
def test_merge_lesion_masks_refuses_non_binary_naming_the_file(bad):
    a = np.zeros((2, 3, 3, 3), np.float32)
    a[0, 0, 0, 0] = 1
    a[1, 1, 1, 1] = bad
    with pytest.raises(ValueError, match=r"m2.nii.gz: expected a binary lesion mask \(values 0/1 or 0/255\), found 0 "):
        MergeLesionMasksd(keys="label", files_key="files")({"label": a, "files": ["m1.nii.gz", "m2.nii.gz"]})
    mixed = np.zeros((1, 3, 3, 3), np.float32)
    mixed[0, 0, 0, 0], mixed[0, 1, 1, 1] = 1, 255  # 0/1 and 0/255 in one mask: not one of the two storages
    with pytest.raises(ValueError, match="label array: expected a binary lesion mask"):
        MergeLesionMasks()(mixed)
    with pytest.raises(ValueError, match="one file per mask channel"):
        MergeLesionMasks()(a[:1], files=["x", "y"])
