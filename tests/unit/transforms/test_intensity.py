"""common.transforms.intensity: per-slice z-scoring (function and transform pair), z-scoring within a foreground."""

from __future__ import annotations

import pytest
import torch
from monai.data import MetaTensor
from monai.transforms import NormalizeIntensity

from common.transforms import ZScoreForeground, ZScoreForegroundd, ZScoreSlices, ZScoreSlicesd, zscore_slices


def test_zscore_slices_pair():
    x = torch.rand(2, 9, 11, 4) * 50 + 3
    out = ZScoreSlices()(x)
    for c in range(2):
        for s in range(4):
            sl = out[c, :, :, s]
            assert abs(float(sl.mean())) < 1e-4 and abs(float(sl.std(unbiased=False)) - 1) < 1e-4
    torch.testing.assert_close(ZScoreSlicesd("image")({"image": x[..., 0]})["image"], zscore_slices(x[..., 0]))
    assert torch.equal(zscore_slices(torch.ones(1, 4, 4)), torch.zeros(1, 4, 4))  # constant slice: no NaN


def test_zscore_foreground_is_monai_nonzero_normalisation_with_a_background_value():
    x = torch.zeros(2, 9, 11, 7)
    x[:, 2:7, 3:9, 1:6] = torch.rand(2, 5, 6, 5) * 300 + 50  # a "brain" of positive values inside zeros
    reference = NormalizeIntensity(nonzero=True, channel_wise=True)(x.clone())  # MONAI (in place): outside stays 0
    torch.testing.assert_close(ZScoreForeground()(x), reference, atol=1e-5, rtol=1e-5)
    out = ZScoreForeground(background=-5.0)(MetaTensor(x, affine=torch.diag(torch.tensor([2.0, 1.0, 1.0, 1.0]))))
    inside = x > 0
    torch.testing.assert_close(out.as_tensor()[inside], reference[inside], atol=1e-5, rtol=1e-5)
    assert torch.all(out.as_tensor()[~inside] == -5.0) and isinstance(out, MetaTensor) and out.pixdim[0] == 2.0
    d = ZScoreForegroundd("image", background=-5.0)({"image": x})
    torch.testing.assert_close(d["image"], out.as_tensor())
    assert torch.all(ZScoreForeground(background=-1.0)(torch.zeros(1, 3, 3)) == -1.0)  # no foreground: background
    assert torch.all(ZScoreForeground()(torch.full((1, 3, 3), 4.0)) == 0.0)  # constant foreground: 0, no NaN
    with pytest.raises(ValueError, match="expected a channel-first image"):
        ZScoreForeground()(torch.zeros(5))


def test_hounsfield_units_detects_an_offset_and_logs_it(caplog):
    import logging

    from common.transforms import HounsfieldUnits, HounsfieldUnitsd

    stored = torch.tensor([[[0.0, 1000.0], [1400.0, 4095.0]]])  # 0-4095 storage: air at 0
    with caplog.at_level(logging.INFO, logger="common.transforms.intensity.array"):
        out = HounsfieldUnitsd("image")({"image": stored, "case": "case3"})["image"]
    torch.testing.assert_close(out, stored - 1000)
    assert "case3 image: intensities 0 to 4095, offset 1000 subtracted" in caplog.text
    hu = torch.tensor([[[-1024.0, 0.0], [400.0, 1200.0]]])
    torch.testing.assert_close(HounsfieldUnits()(hu), hu)  # already HU: unchanged
    torch.testing.assert_close(HounsfieldUnits(offset=24)(hu), hu - 24)
