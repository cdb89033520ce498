"""refine: the region of interest, values against the parts run by hand, paste-back, clamping, a refinement that
follows the clicks, the label unchanged without clicks, an explicit class count, and errors for bad labels, seeds,
CRFs and networks."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.networks.utils import one_hot
from torch import nn

from common.apps.deepigeos import refine, refinement_box
from common.networks.blocks import CRFNet
from common.networks.nets import rnet
from common.transforms import geodesic_map

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


def case_3d() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """A bright block on a dark background; the label misses one end of it (three foreground clicks there) and
    adds a false blob beside it (one background click there). Returns image, label, seeds and the truth."""
    rng = np.random.default_rng(0)
    truth = torch.zeros(40, 36, 12, dtype=torch.long)
    truth[12:26, 10:24, 3:9] = 1
    image = truth * 2.0 + torch.from_numpy(rng.normal(0, 0.1, truth.shape)).float()
    label = truth.clone()
    label[21:26] = 0
    label[12:16, 24:28, 3:9] = 1
    seeds = torch.zeros(2, 40, 36, 12)
    for point in ((23, 16, 5), (25, 12, 4), (22, 21, 7)):
        seeds[(1, *point)] = 1
    seeds[0, 14, 26, 6] = 1
    return image[None], label, seeds, truth


def test_inside_the_box_equals_the_parts_run_by_hand_and_outside_is_the_label() -> None:
    image, label, seeds, _ = case_3d()
    torch.manual_seed(0)
    net = rnet(3, **SMALL).eval()
    crf = CRFNet(3, window=3, iterations=2).eval()
    result = refine(image, label, seeds, net, 2, crf, margin=(3, 2, 1))
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
    ones, the label where both are as near. Channel order as R-Net's input: image, label, background map,
    foreground map. Only the order of the two maps counts, not their scale."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fg = 10.0 * torch.sign(x[:, 2] - x[:, 3]) + (x[:, 1] - 0.5)
        return torch.stack([-fg, fg], 1)


def dice(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(2 * (a & b).sum() / (a.sum() + b.sum()))


def test_refinement_follows_the_clicks_and_raises_dice() -> None:
    image, label, seeds, truth = case_3d()
    result = refine(image, label, seeds, GeodesicVote(), 2, None, margin=4)
    refined = result.probabilities.argmax(0)
    before, after = dice(label > 0, truth > 0), dice(refined > 0, truth > 0)
    assert before < 0.8 and after > 0.95
    swapped = refine(image, label, seeds.flip(0), GeodesicVote(), 2, None, margin=4).probabilities.argmax(0)
    assert dice(swapped > 0, truth > 0) < before  # clicks read the other way round make it worse


class MustNotRun(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise AssertionError("the network ran without any click")


def test_no_click_returns_the_label_unchanged_without_running_anything() -> None:
    image, label, seeds, _ = case_3d()
    crf = CRFNet(3, window=3, iterations=2)
    result = refine(image, label, torch.zeros_like(seeds), MustNotRun(), 2, crf)
    assert torch.equal(result.probabilities, one_hot(label[None], 2, dim=0))
    assert result.box == (slice(0, 0),) * 3 and set(result.seconds) == {"crop"}
    nothing = refine(image, torch.zeros_like(label), torch.zeros_like(seeds), MustNotRun(), 3)
    assert nothing.probabilities.shape == (3, 40, 36, 12) and (nothing.probabilities[0] == 1).all()


def test_num_classes_is_given_so_a_network_in_train_mode_runs() -> None:
    torch.manual_seed(0)
    image, label, seeds, _ = case_3d()
    net = rnet(3, **SMALL).train()  # batch norm in train mode: a one-voxel probe of the class count would fail
    result = refine(image, label, seeds, net, 2, margin=2)
    assert result.probabilities.shape == (2, 40, 36, 12)
    torch.testing.assert_close(result.probabilities.sum(0), torch.ones(40, 36, 12))
    with pytest.raises(ValueError, match=r"network: expected 3 output channels \(num_classes\), found 2"):
        refine(image, label, seeds, net, 3)
    for bad in (1, 2.0, True):
        with pytest.raises(ValueError, match="num_classes: expected an integer >= 2"):
            refine(image, label, seeds, net, bad)


def test_2d_with_three_classes() -> None:
    torch.manual_seed(0)
    net = rnet(2, out_channels=3, **SMALL).eval()
    image = torch.randn(1, 30, 25)
    label = torch.zeros(30, 25, dtype=torch.long)
    label[10:15, 5:9] = 2
    seeds = torch.zeros(2, 30, 25)
    seeds[1, 16, 7] = 1
    result = refine(image, label, seeds, net, 3, margin=2)
    assert result.probabilities.shape == (3, 30, 25) and result.box == (slice(8, 19), slice(3, 11))
    torch.testing.assert_close(result.probabilities.sum(0), torch.ones(30, 25))


def test_floating_point_labels_are_refused_with_dtype_and_values() -> None:
    image, label, seeds, _ = case_3d()
    net = rnet(3, **SMALL).eval()
    probabilities = label.float() * 0.7 + 0.1  # would be truncated to all background by .long()
    with pytest.raises(ValueError, match=r"label: expected integer class indices .* found dtype torch.float32 "):
        refine(image, probabilities, seeds, net, 2)
    with pytest.raises(ValueError, match=r"with values \[0.1, 0.8\]"):
        refine(image, probabilities, seeds, net, 2)
    with pytest.raises(ValueError, match=r"with values \[0, 1\]"):
        refine(image, label.float(), seeds, net, 2)  # whole numbers in a float tensor too: cast them first
    result = refine(image, label.numpy().astype(np.uint8), seeds, net, 2)  # any integer dtype is fine
    assert result.probabilities.shape == (2, 40, 36, 12)


def test_bad_seeds_and_crfs_are_named() -> None:
    image, label, seeds, _ = case_3d()
    net = rnet(3, **SMALL).eval()
    twos = seeds * 2
    with pytest.raises(ValueError, match=r"seeds: expected 0/1 click maps, found values \[0, 2\]"):
        refine(image, label, twos, net, 2)
    both = seeds.clone()
    both[0, 23, 16, 5] = 1  # also a foreground click
    with pytest.raises(ValueError, match=r"seeds: expected no voxel clicked as both .* found 1, e.g. at \(23, 16, 5\)"):
        refine(image, label, both, net, 2)
    crf3 = CRFNet(3, num_classes=3, window=3, iterations=1)
    with pytest.raises(ValueError, match="crf: expected num_classes == 2 .* found num_classes=3"):
        refine(image, label, seeds, rnet(3, out_channels=3, **SMALL).eval(), 3, crf3)
    with pytest.raises(ValueError, match="crf: expected a CRF of num_classes=2 classes, found 3"):
        refine(image, label, seeds, net, 2, crf3)


def test_bad_shapes_and_labels_are_named() -> None:
    net = rnet(2, **SMALL).eval()
    label = torch.zeros(10, 10, dtype=torch.long)
    label[4, 4] = 3
    with pytest.raises(ValueError, match=r"image, seeds: expected \(1, \*S\) and \(2, \*S\)"):
        refine(torch.zeros(2, 10, 10), label, torch.zeros(2, 10, 10), net, 2)
    with pytest.raises(ValueError, match=r"image, seeds: expected"):
        refine(torch.zeros(1, 10, 10), label, torch.zeros(1, 10, 10), net, 2)
    with pytest.raises(ValueError, match=r"label: expected class indices in \[0, 2\), found \[0, 3\]"):
        refine(torch.zeros(1, 10, 10), label, torch.zeros(2, 10, 10), net, 2)
