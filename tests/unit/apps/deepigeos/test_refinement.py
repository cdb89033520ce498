"""refine: the region of interest, values against the parts run by hand, paste-back, clamping, a refinement that
follows the clicks, and errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from common.apps.deepigeos import refine, refinement_box
from common.networks.blocks import CRFNet
from common.networks.nets import rnet
from common.transforms import clicks_to_seeds, geodesic_map, simulate_clicks

SMALL = {"features": (4, 4, 4, 4, 4), "compress": 2, "head_channels": 4}


def test_box_covers_label_and_clicks_with_margin_clipped_to_the_volume() -> None:
    label = torch.zeros(20, 30, 10)
    label[5:8, 10:12, 4:6] = 1
    seeds = torch.zeros(2, 20, 30, 10)
    seeds[0, 15, 20, 5] = 1  # a background click outside the label
    box = refinement_box(label, seeds, margin=(2, 3, 4))
    assert box == (slice(3, 18), slice(7, 24), slice(0, 10))  # the last axis clipped at both ends
    assert refinement_box(label[None], seeds, margin=1) == (slice(4, 17), slice(9, 22), slice(3, 7))
    empty = refinement_box(torch.zeros(20, 30, 10), torch.zeros(2, 20, 30, 10), margin=3)
    assert all(s.stop <= s.start for s in empty)
    with pytest.raises(ValueError, match="margin: expected 3 non-negative"):
        refinement_box(label, seeds, margin=(1, 2))
    with pytest.raises(ValueError, match="label: expected the spatial shape of seeds"):
        refinement_box(torch.zeros(20, 30, 9), seeds, margin=1)


def case_3d() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A bright block on a dark background; the label misses one end of it and adds a false blob beside it."""
    rng = np.random.default_rng(0)
    truth = np.zeros((40, 36, 12), dtype=np.uint8)
    truth[12:26, 10:24, 3:9] = 1
    image = truth * 2.0 + rng.normal(0, 0.1, truth.shape)
    pred = truth.copy()
    pred[21:26] = 0
    pred[12:16, 24:28, 3:9] = 1
    fg, bg = simulate_clicks(pred, truth, np.random.RandomState(0))
    seeds = clicks_to_seeds(fg, bg, truth.shape)
    return torch.tensor(image[None], dtype=torch.float32), torch.from_numpy(pred), torch.from_numpy(seeds)


def test_inside_the_box_equals_the_parts_run_by_hand_and_outside_is_the_label() -> None:
    image, label, seeds = case_3d()
    torch.manual_seed(0)
    net = rnet(3, **SMALL).eval()
    crf = CRFNet(3, window=3, iterations=2).eval()
    result = refine(image, label, seeds, net, crf, margin=(3, 2, 1))
    assert result.box == (slice(9, 29), slice(8, 30), slice(2, 10))
    assert set(result.seconds) == {"crop", "geodesic", "network", "crf", "paste"}
    region = (slice(None), *result.box)
    maps = geodesic_map(image[region], seeds[region])
    x = torch.cat([image[region], label[result.box][None].float(), maps])[None]
    with torch.no_grad():
        expected = crf(net(x), image[region][None], seeds[region][None])[0]
    torch.testing.assert_close(result.probabilities[region], expected)
    outside = torch.ones_like(label, dtype=torch.bool)
    outside[result.box] = False
    assert result.probabilities.shape == (2, 40, 36, 12)
    assert (result.probabilities[0][outside] == 1).all() and (result.probabilities[1][outside] == 0).all()
    clicked = seeds.sum(0) > 0
    torch.testing.assert_close(result.probabilities[:, clicked], seeds[:, clicked])  # CRF-Net(fu) clamps them


class GeodesicVote(nn.Module):
    """A hand-made "R-Net": foreground where the foreground clicks are geodesically nearer than the background
    ones, the label elsewhere. Channel order as R-Net's input: image, label, background map, foreground map."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fg = 20.0 * (x[:, 2] - x[:, 3]) + (x[:, 1] - 0.5)
        return torch.stack([-fg, fg], 1)


def dice(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(2 * (a & b).sum() / (a.sum() + b.sum()))


def test_refinement_follows_the_clicks_and_raises_dice() -> None:
    image, label, seeds = case_3d()
    truth = torch.zeros_like(label)
    truth[12:26, 10:24, 3:9] = 1
    result = refine(image, label, seeds, GeodesicVote(), None, margin=4)
    refined = result.probabilities.argmax(0)
    before, after = dice(label > 0, truth > 0), dice(refined > 0, truth > 0)
    assert before < 0.8 and after > 0.95
    swapped = refine(image, label, seeds.flip(0), GeodesicVote(), None, margin=4).probabilities.argmax(0)
    assert dice(swapped > 0, truth > 0) < before  # clicks read the other way round make it worse


def test_2d_and_nothing_to_refine() -> None:
    torch.manual_seed(0)
    net = rnet(2, out_channels=3, **SMALL).eval()
    image = torch.randn(1, 30, 25)
    label = torch.zeros(30, 25, dtype=torch.long)
    label[10:15, 5:9] = 2
    seeds = torch.zeros(2, 30, 25)
    result = refine(image, label, seeds, net, margin=2)
    assert result.probabilities.shape == (3, 30, 25) and result.box == (slice(8, 17), slice(3, 11))
    torch.testing.assert_close(result.probabilities.sum(0), torch.ones(30, 25))
    nothing = refine(image, torch.zeros(30, 25), seeds, net)
    assert nothing.probabilities.shape == (3, 30, 25) and (nothing.probabilities[0] == 1).all()
    assert set(nothing.seconds) == {"crop"}


def test_bad_inputs_are_named() -> None:
    net = rnet(2, **SMALL).eval()
    label = torch.zeros(10, 10, dtype=torch.long)
    label[4, 4] = 3
    with pytest.raises(ValueError, match=r"image, seeds: expected \(1, \*S\) and \(2, \*S\)"):
        refine(torch.zeros(2, 10, 10), label, torch.zeros(2, 10, 10), net)
    with pytest.raises(ValueError, match=r"image, seeds: expected"):
        refine(torch.zeros(1, 10, 10), label, torch.zeros(1, 10, 10), net)
    with pytest.raises(ValueError, match=r"label: expected class indices in \[0, 2\), found \[0, 3\]"):
        refine(torch.zeros(1, 10, 10), label, torch.zeros(2, 10, 10), net)
