"""refine_clicks on the input grid: equal to the bundle's preprocessing (crop to the brain, normalisation within it)
then refine then paste-back; the label outside the crop kept; clicks clamped by CRF-Net(fu); bad clicks and labels
refused."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from monai.transforms import Compose, CropForegroundd

from common.apps.deepigeos import brain_box, refine, refine_clicks, voxel_indices
from common.networks.blocks import CRFNet
from common.networks.nets import rnet
from common.transforms import ZScoreForegroundd

SMALL = {"features": (4, 4, 4, 4, 4), "compress": 2, "head_channels": 4}


class Recorder(torch.nn.Module):
    """Stands in for R-Net: keeps its inputs, answers background."""

    def __init__(self) -> None:
        super().__init__()
        self.inputs: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.inputs.append(x.clone())
        return torch.zeros(x.shape[0], 2, *x.shape[2:])


def volume() -> tuple[MetaTensor, torch.Tensor]:
    """A FLAIR-like volume: a 'brain' of positive intensities inside zeros, a brighter tumour, and a label."""
    rng = np.random.default_rng(0)
    image = np.zeros((30, 32, 24), np.float32)
    image[4:26, 5:28, 3:20] = rng.uniform(300, 400, (22, 23, 17))
    image[10:17, 12:20, 8:14] += 300
    label = np.zeros(image.shape, np.uint8)
    label[11:16, 12:19, 8:13] = 1
    label[0, 0, 0] = 1  # a stray voxel outside the brain crop: left as it is
    return MetaTensor(
        torch.from_numpy(image)[None], affine=torch.diag(torch.tensor([1.0, 1.0, 1.0, 1.0]))
    ), torch.from_numpy(label)


def test_equals_the_bundle_preprocessing_then_refine_then_paste_back() -> None:
    torch.manual_seed(0)
    net, crf = rnet(3, **SMALL).eval(), CRFNet(3, 2, 1, window=3, iterations=2).eval()
    image, label = volume()
    fg, bg = [[16, 18, 13]], [[20, 22, 10]]
    given = label.clone()
    out = refine_clicks(image, label, fg, bg, net, crf, brain_margin=2, rnet_background=-5.0, margin=8)
    assert out.shape == label.shape and out.dtype == torch.uint8 and torch.equal(label, given)  # input untouched
    pre = Compose(
        [
            CropForegroundd(["image", "label"], source_key="image", margin=2, allow_smaller=True),
            ZScoreForegroundd("image", background=-5.0),
        ]
    )
    d = pre({"image": image, "label": label[None]})
    box = brain_box(image, 2)
    assert box == (slice(2, 28), slice(3, 30), slice(1, 22)) and d["image"].shape[1:] == (26, 27, 21)
    seeds = torch.zeros(2, 26, 27, 21)
    seeds[1, 14, 15, 12] = 1  # the clicks in crop coordinates
    seeds[0, 18, 19, 9] = 1
    step = refine(d["image"], d["label"][0].long(), seeds, net, 2, crf=crf, margin=8)
    assert (d["image"][(slice(None), *step.box)] == -5.0).any()  # the box reaches outside the brain
    expected = step.probabilities.argmax(0)
    torch.testing.assert_close(out[box].long(), expected)
    assert out[0, 0, 0] == 1 and out[16, 18, 13] == 1 and out[20, 22, 10] == 0  # outside kept; clicks clamped
    seen, reference = Recorder(), Recorder()  # and R-Net is given exactly the bundle's input
    refine_clicks(image, label, fg, bg, seen, brain_margin=2, rnet_background=-5.0, margin=8)
    refine(d["image"], d["label"][0].long(), seeds, reference, 2, margin=8)
    torch.testing.assert_close(seen.inputs[0], reference.inputs[0])
    inside = torch.zeros_like(label, dtype=torch.bool)
    inside[box] = True
    assert torch.equal(out[~inside], label[~inside])


def test_label_read_as_float_and_without_clicks() -> None:
    image, label = volume()
    net = rnet(3, **SMALL).eval()
    out = refine_clicks(image, label.float()[None], None, [], net)
    assert torch.equal(out, label)  # no click: nothing refined


def test_bad_clicks_and_labels() -> None:
    image, label = volume()
    net = rnet(3, **SMALL).eval()
    with pytest.raises(
        ValueError, match=r"foreground: expected voxel indices inside the image \(30, 32, 24\), found \[\[30, 0, 0\]\]"
    ):
        refine_clicks(image, label, [[30, 0, 0]], None, net)
    with pytest.raises(ValueError, match=r"background: expected voxel indices \[\[i, j, k\], ...\] of a 3D image"):
        refine_clicks(image, label, None, [[1, 2]], net)
    with pytest.raises(
        ValueError,
        match=r"expected clicks inside the brain crop \[\(4, 26\), \(5, 28\), \(3, 20\)\], found \[\[1, 1, 1\]\]",
    ):
        refine_clicks(image, label, [[1, 1, 1]], None, net)
    with pytest.raises(ValueError, match="label: expected class indices 0 / 1, found non-integer values"):
        refine_clicks(image, label.float() * 0.5, [[12, 14, 10]], None, net)
    with pytest.raises(ValueError, match=r"image, label: expected \(1, \*S\) and \(\*S\)"):
        refine_clicks(image, label[:-1], [[12, 14, 10]], None, net)


def test_voxel_indices() -> None:
    """Clicks as MONAI Label sends them: lists of integer voxel indices; bools, floats and strings are refused (a
    JSON ``true`` would otherwise read as voxel 1), as is any click outside the image."""
    np.testing.assert_array_equal(
        voxel_indices([[1, 2, 3], (0, np.int32(4), 5)], "fg", (4, 5, 6)), [[1, 2, 3], [0, 4, 5]]
    )
    for empty in (None, [], ()):
        assert voxel_indices(empty, "fg", (4, 5, 6)).shape == (0, 3)
    for bad in ([[True, 2, 3]], [[1.0, 2, 3]], [[1, 2]], "centre", [1, 2, 3], [[1, 2, "3"]], [[1, 2, None]]):
        with pytest.raises(ValueError, match=r"fg: expected voxel indices \[\[i, j, k\], ...\] of a 3D image"):
            voxel_indices(bad, "fg", (4, 5, 6))
    with pytest.raises(
        ValueError, match=r"bg: expected voxel indices inside the image \(4, 5, 6\), found \[\[-1, 0, 0\]\]"
    ):
        voxel_indices([[0, 0, 0], [-1, 0, 0]], "bg", (4, 5, 6))
