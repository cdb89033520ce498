"""CentreCropInferer: the network sees exactly the centre crop the original code takes; outside it probability 0."""

from __future__ import annotations

import torch

from common.apps.zoom import CentreCropInferer, centre_crop_slices


def test_centre_crop_slices_as_the_original():
    # the original: start = (size - crop) // 2 on each axis
    assert centre_crop_slices((197, 233, 189), (144, 172, 168)) == (slice(26, 170), slice(30, 202), slice(10, 178))
    assert centre_crop_slices((10, 6, 7), (4, 8, -1)) == (slice(3, 7), slice(0, 6), slice(0, 7))


def test_network_sees_the_crop_and_outside_is_zero_probability():
    x = torch.arange(2 * 1 * 9 * 8 * 7, dtype=torch.float32).reshape(2, 1, 9, 8, 7)
    seen = []

    def network(t):
        seen.append(t)
        return t + 1

    out = CentreCropInferer((4, 5, 3))(x, network)
    box = centre_crop_slices((9, 8, 7), (4, 5, 3))
    torch.testing.assert_close(seen[0], x[(slice(None), slice(None), *box)])
    assert out.shape == x.shape
    torch.testing.assert_close(out[(slice(None), slice(None), *box)], x[(slice(None), slice(None), *box)] + 1)
    outside = torch.ones_like(x, dtype=torch.bool)
    outside[(slice(None), slice(None), *box)] = False
    assert torch.sigmoid(out[outside]).eq(0).all()
