"""common.transforms.intensity: per-slice z-scoring (function and transform pair)."""

from __future__ import annotations

import torch

from common.transforms import ZScoreSlices, ZScoreSlicesd, zscore_slices


def test_zscore_slices_pair():
    x = torch.rand(2, 9, 11, 4) * 50 + 3
    out = ZScoreSlices()(x)
    for c in range(2):
        for s in range(4):
            sl = out[c, :, :, s]
            assert abs(float(sl.mean())) < 1e-4 and abs(float(sl.std(unbiased=False)) - 1) < 1e-4
    torch.testing.assert_close(ZScoreSlicesd("image")({"image": x[..., 0]})["image"], zscore_slices(x[..., 0]))
    assert torch.equal(zscore_slices(torch.ones(1, 4, 4)), torch.zeros(1, 4, 4))  # constant slice: no NaN
