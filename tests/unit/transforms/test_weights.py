"""Boundary weights against a brute-force distance to the boundary voxels."""

from __future__ import annotations

import numpy as np
import torch
from scipy.spatial.distance import cdist

from common.transforms import BoundaryWeight, BoundaryWeightd, boundary_weights


def test_boundary_weights_match_brute_force():
    lab = np.zeros((9, 10, 8), dtype=np.int32)
    lab[2:7, 3:8, 2:6] = 4
    lab[0:2, 0:3, 0:8] = 5  # touches the image edge: edge voxels are not boundary unless they face background
    fg = lab > 0
    idx = np.argwhere(np.ones_like(fg))
    boundary = []
    for v in np.argwhere(fg):
        for axis in range(3):
            for step in (-1, 1):
                n = v.copy()
                n[axis] += step
                if 0 <= n[axis] < fg.shape[axis] and not fg[tuple(n)]:
                    boundary.append(v)
    d = cdist(idx, np.unique(np.array(boundary), axis=0)).min(1).reshape(fg.shape)
    expected = 1 + 8 * np.exp(-(d**2) / 36)
    np.testing.assert_allclose(boundary_weights(lab), expected, rtol=1e-5)
    out = BoundaryWeightd("label", "weight")({"label": torch.as_tensor(lab)[None]})
    assert out["weight"].shape == (1, 9, 10, 8) and out["weight"].dtype == torch.float32
    np.testing.assert_allclose(out["weight"][0].numpy(), expected, rtol=1e-5)


def test_no_foreground_gives_ones():
    np.testing.assert_array_equal(BoundaryWeight()(np.zeros((1, 4, 4, 4))), np.ones((1, 4, 4, 4)))
