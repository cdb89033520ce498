"""common.apps.igs.report: the per-channel pattern figure draws every acceleration's channels and refuses masks it
cannot draw."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from common.apps.igs import plot_channel_patterns


def test_channel_patterns_figure(tmp_path):
    masks = {16.0: torch.zeros(4, 48), 8: np.zeros((4, 48))}
    masks[16.0][:, 24] = 1
    masks[8][:, 20:28] = 1
    path = plot_channel_patterns(masks, tmp_path / "channels.png", ["flair", "t1", "t1ce", "t2"])
    image = np.asarray(Image.open(path).convert("L"))
    assert path == tmp_path / "channels.png" and image.shape[0] > image.shape[1] / 4  # two panels stacked
    assert image.min() < 50  # sampled lines drawn dark
    default = plot_channel_patterns({4: np.eye(2, 8)}, tmp_path / "default.png")  # names default to channel <c>
    assert default.stat().st_size > 1000


def test_channel_patterns_refusals(tmp_path):
    with pytest.raises(ValueError, match=r"expected one or more masks of one shape \(C, W\)"):
        plot_channel_patterns({8: np.zeros((4, 48)), 16: np.zeros((4, 32))}, tmp_path / "a.png")
    with pytest.raises(ValueError, match=r"expected one or more masks of one shape \(C, W\)"):
        plot_channel_patterns({8: np.zeros(48)}, tmp_path / "a.png")
    with pytest.raises(ValueError, match="channel_names: expected 4 names, found 2"):
        plot_channel_patterns({8: np.zeros((4, 48))}, tmp_path / "a.png", ["flair", "t1"])
    assert not (tmp_path / "a.png").exists()
