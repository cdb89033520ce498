"""CRFSegmenter: the output is log of the CRF's probabilities on the backbone's logits with the image as features,
works as logits (softmax, argmax, Dice-CE), clamps clicks, trains both parts, scripts; errors."""

from __future__ import annotations

import warnings

import pytest
import torch
from monai.losses import DiceCELoss

from common.networks.blocks import CRFNet
from common.networks.nets import CRFSegmenter, PNet, rnet

SMALL = {"features": (4, 4, 4, 4, 4), "compress": 2, "head_channels": 4}


def make(seed: int = 0) -> CRFSegmenter:
    torch.manual_seed(seed)
    return CRFSegmenter(rnet(3, **SMALL), CRFNet(3, 2, 1, window=3, iterations=3)).eval()


def test_output_is_the_log_of_the_crf_on_the_backbone_with_the_image_as_features() -> None:
    model = make()
    x = torch.randn(1, 4, 9, 10, 7)
    seeds = torch.zeros(1, 2, 9, 10, 7)
    seeds[0, 1, 4, 5, 3] = 1
    seeds[0, 0, 1, 1, 1] = 1
    with torch.no_grad():
        q = model.crf(model.backbone(x), x[:, :1], seeds)  # by hand: features = channel 0, the image
        out = model(x, seeds)
    torch.testing.assert_close(out, torch.log(q.clamp_min(1e-6)))
    torch.testing.assert_close(torch.softmax(out, 1), q, atol=1e-5, rtol=1e-4)  # usable as logits
    assert out.argmax(1)[0, 4, 5, 3] == 1 and out.argmax(1)[0, 1, 1, 1] == 0  # clicks clamped to their class
    with torch.no_grad():
        free = model(x)
    torch.testing.assert_close(free, torch.log(model.crf(model.backbone(x), x[:, :1]).clamp_min(1e-6)))


def test_dice_ce_trains_backbone_and_crf_jointly() -> None:
    model = make().train()
    x, y = torch.randn(2, 4, 8, 9, 6), torch.randint(0, 2, (2, 1, 8, 9, 6))
    DiceCELoss(to_onehot_y=True, softmax=True)(model(x), y).backward()
    assert model.backbone.head[-1].conv.weight.grad.abs().sum() > 0
    assert model.crf.compatibility.grad.abs().sum() > 0
    assert model.crf.pairwise.out.weight.grad.abs().sum() > 0


def test_torchscript_matches_eager_with_and_without_seeds() -> None:
    model = make()
    model.backbone = PNet(3, in_channels=4, **SMALL).eval()
    x = torch.randn(1, 4, 8, 9, 6)
    seeds = torch.zeros(1, 2, 8, 9, 6)
    seeds[0, 1, 2, 2, 2] = 1
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        scripted = torch.jit.script(model)
    with torch.no_grad():
        torch.testing.assert_close(scripted(x), model(x))
        torch.testing.assert_close(scripted(x, seeds), model(x, seeds))


def test_errors() -> None:
    crf = CRFNet(3, 2, 1)
    with pytest.raises(ValueError, match="feature_channels: expected at least 1"):
        CRFSegmenter(PNet(3, **SMALL), crf, feature_channels=0)
    with pytest.raises(ValueError, match=r"eps: expected a probability floor in \(0, 1\)"):
        CRFSegmenter(PNet(3, **SMALL), crf, eps=0.0)
