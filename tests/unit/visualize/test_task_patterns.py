"""common.visualize.task_patterns: one panel per acceleration and channel, one row per task; the files the search
writes are read back, and masks it cannot draw are refused."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from common.visualize.task_patterns import main, plot_task_patterns


def _masks(lines: list[int]) -> np.ndarray:
    mask = np.zeros((2, 48), dtype=np.float32)  # two channels: a small, fast figure
    mask[:, lines] = 1
    return mask


def test_task_patterns_grid(tmp_path):
    patterns = {
        "segmentation": {8: _masks([22, 23, 24, 25, 26, 27]), 16: _masks([23, 24, 25])},
        "classification": {8: _masks([0, 18, 19, 24, 29, 30]), 16: _masks([0, 18, 24])},
    }
    path = plot_task_patterns(patterns, tmp_path / "tasks.png", ["flair", "t1"])
    image = np.asarray(Image.open(path).convert("L"))
    assert path == tmp_path / "tasks.png" and image.min() < 50  # sampled lines drawn dark
    fig_w, fig_h = 3.2 * 2 + 1.8, 0.6 + 0.3 * 2 * 2 + 0.4 * 2  # 2 accelerations x 2 channels, 2 tasks per panel
    assert image.shape == (round(fig_h * 100), round(fig_w * 100))
    # one acceleration: half as many panel rows
    one = np.asarray(Image.open(plot_task_patterns({"a": {8: _masks([24])}}, tmp_path / "one.png")).convert("L"))
    assert one.shape == (round((0.6 + 0.3 + 0.4) * 100), round(fig_w * 100))


def test_task_patterns_cli_and_refusals(tmp_path):
    for acc, lines in ((8, [24, 25]), (16, [24])):
        np.save(tmp_path / f"igs_l1_phase_x{acc}.npy", _masks(lines))
    out = main(["--out", str(tmp_path / "cli.png"), "--task", f"L1={tmp_path}:igs_l1", "--accelerations", "16", "8"])
    assert out.stat().st_size > 1000
    with pytest.raises(FileNotFoundError, match=r"igs_l1_phase_x4.npy: expected the 'L1' pattern at x4"):
        main(["--out", str(tmp_path / "x.png"), "--task", f"L1={tmp_path}:igs_l1", "--accelerations", "4"])
    with pytest.raises(ValueError, match="expected the same accelerations for every task"):
        plot_task_patterns({"a": {8: _masks([1])}, "b": {16: _masks([1])}}, tmp_path / "x.png")
    with pytest.raises(ValueError, match=r"expected masks of one shape \(C, W\)"):
        plot_task_patterns({"a": {8: _masks([1])}, "b": {8: np.zeros((2, 32))}}, tmp_path / "x.png")
    with pytest.raises(ValueError, match="channel_names: expected 2 names, found 3"):
        plot_task_patterns({"a": {8: _masks([1])}}, tmp_path / "x.png", ["flair", "t1", "t2"])
    assert not (tmp_path / "x.png").exists()
