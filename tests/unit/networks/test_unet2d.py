"""common.networks.nets.unet2d: shapes, the seed's structure (weights map onto the hook-based original), TorchScript."""

from __future__ import annotations

import pytest
import torch

from common.networks.nets import UNet2d
from tests.support.reference import HookUNet


@pytest.mark.parametrize("depth", [1, 2, 3, 4, 5])
@pytest.mark.parametrize("size", [(32, 48), (80, 16)])
def test_shapes(depth, size):
    net = UNet2d(in_channels=3, out_channels=2, features=4, depth=depth)
    x = torch.randn(2, 3, *size)
    assert net(x).shape == (2, 2, *size)


def test_parameter_count_is_the_seeds():
    # depth 4, 32 features: 3 encoder blocks (3->32, 32->32, 32->32), bottleneck, 3 x (deconv + 64->32 block), head
    block = lambda i, o: (i * 9 + 1) * o + 2 * o + (o * 9 + 1) * o + 2 * o  # noqa: E731
    expected = block(3, 32) + 3 * block(32, 32) + 3 * (32 * 32 * 4 + block(64, 32)) + 33
    assert sum(p.numel() for p in UNet2d().parameters()) == expected == 161985


@pytest.mark.parametrize("depth", [2, 4])
def test_sigmoid_of_logits_equals_the_hook_based_seed_network(depth):
    torch.manual_seed(0)
    seed = HookUNet(3, 1, 8, depth)
    ours = UNet2d(3, 1, 8, depth)
    theirs, mine = seed.state_dict(), ours.state_dict()
    assert [v.shape for v in theirs.values()] == [v.shape for v in mine.values()]  # same layers, same order
    ours.load_state_dict(dict(zip(mine, theirs.values())))
    x = torch.randn(2, 3, 32, 32)
    for mode in ("train", "eval"):
        seed.train(mode == "train"), ours.train(mode == "train")
        torch.testing.assert_close(torch.sigmoid(ours(x)), seed(x), atol=1e-6, rtol=1e-5)
    assert not seed.activations  # every pushed skip was popped


def test_no_state_kept_between_calls_and_scriptable():
    net = UNet2d(features=4, depth=3).eval()
    x = torch.randn(1, 3, 16, 16)
    with pytest.raises(RuntimeError):
        net(torch.randn(1, 3, 10, 10))  # 10 is not a multiple of 2 ** (depth - 1): fails ...
    scripted = torch.jit.script(net)
    torch.testing.assert_close(scripted(x), net(x))  # ... and leaves nothing behind
    assert not any(isinstance(v, list) for v in vars(net).values())


def test_bad_arguments():
    with pytest.raises(ValueError, match="depth: expected >= 1 level, found 0"):
        UNet2d(depth=0)
    with pytest.raises(ValueError, match="expected positive counts, found 3, 1, 0"):
        UNet2d(features=0)
