"""common.apps.igs.search: the greedy search finds the informative lines, writes every budget's pattern, and resumes."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from common.apps.igs import IterativeGradientSampling, cache_line_spectra, igs_loss, mask_gradient
from common.transforms import load_line_pattern

WIDTH, FREQS = 32, (5, 9)  # the label lives in two cosine gratings along W


class Threshold(nn.Module):
    """A fixed "network" on z-scored input: foreground logit = 8 * x, background = -that."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fg = 8.0 * x
        return torch.cat([-fg, fg], dim=1)


def grating_data(n: int = 6) -> list[dict]:
    rng = np.random.default_rng(0)
    cols = np.arange(WIDTH)
    items = []
    for _ in range(n):
        phase = rng.uniform(0, 2 * np.pi, size=2)
        wave = sum(0.4 * np.cos(2 * np.pi * f * cols / WIDTH + p) for f, p in zip(FREQS, phase))
        image = np.broadcast_to(1.0 + wave, (1, 8, WIDTH)).astype(np.float32)
        items.append({"image": image.copy(), "label": (image > 1.0).astype(np.float32)})
    return items


def test_search_picks_the_informative_lines_and_writes_all_budgets(tmp_path):
    igs = IterativeGradientSampling(Threshold(), grating_data(), tmp_path, accelerations=(16, 8, 4), batch_size=4)
    written = igs.run()
    assert sorted(written) == [4.0, 8.0, 16.0]
    order = json.loads((tmp_path / "igs_x4.json").read_text())["order"]
    assert order[0] == WIDTH // 2  # starts from the centre line
    informative = {WIDTH // 2 + s * f for f in FREQS for s in (-1, 1)}
    assert set(order[1:5]) == informative  # the four grating lines come first
    for acc, n in ((16, 2), (8, 4), (4, 8)):
        mask = load_line_pattern(written[acc], width=WIDTH)
        assert int(mask.sum()) == n
        meta = json.loads((tmp_path / f"igs_x{acc}.json").read_text())
        assert meta["lines"] == sorted(meta["order"]) and meta["order"] == order[:n] and meta["acceleration"] == acc
    assert (tmp_path / "igs_search.png").stat().st_size > 0


def test_added_line_has_the_most_negative_gradient():
    batches = cache_line_spectra(grating_data(), batch_size=3)
    mask = torch.zeros(WIDTH)
    mask[WIDTH // 2] = 1
    grad, loss = mask_gradient(Threshold(), batches, mask, igs_loss("dice"))
    assert grad.shape == (WIDTH,) and loss > 0
    grad[WIDTH // 2] = float("inf")
    assert int(grad.argmin()) in {WIDTH // 2 + s * f for f in FREQS for s in (-1, 1)}


def test_resume_continues_to_the_same_result(tmp_path):
    full = IterativeGradientSampling(Threshold(), grating_data(), tmp_path / "a", accelerations=(4,)).run()
    part = IterativeGradientSampling(Threshold(), grating_data(), tmp_path / "b", accelerations=(8,)).run()
    assert 8.0 in part
    state = json.loads((tmp_path / "b/igs_state.json").read_text())
    assert len(state["orders"][0]) == 4
    resumed = IterativeGradientSampling(Threshold(), grating_data(), tmp_path / "b", accelerations=(8, 4)).run()
    assert torch.equal(load_line_pattern(resumed[4.0]), load_line_pattern(full[4.0]))


def test_per_channel_patterns_and_lines_per_iteration(tmp_path):
    data = [
        {"image": np.concatenate([d["image"], d["image"][:, :, ::-1]]), "label": d["label"]} for d in grating_data()
    ]

    class TwoChannel(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return Threshold()(x[:, :1])

    written = IterativeGradientSampling(
        TwoChannel(), data, tmp_path, accelerations=(4,), per_channel=True, lines_per_iteration=3
    ).run()
    mask = load_line_pattern(written[4.0])
    assert mask.shape == (2, WIDTH) and mask.sum(1).tolist() == [8.0, 8.0]


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="expected at least one slice"):
        IterativeGradientSampling(Threshold(), [], tmp_path)
    with pytest.raises(ValueError, match="lines_per_iteration: expected >= 1"):
        IterativeGradientSampling(Threshold(), grating_data(), tmp_path, lines_per_iteration=0)
    with pytest.raises(ValueError, match="expected at least one line"):
        IterativeGradientSampling(Threshold(), grating_data(), tmp_path, accelerations=(64,))
    with pytest.raises(ValueError, match="loss: expected 'dice' or 'dice_ce'"):
        igs_loss("l2")
