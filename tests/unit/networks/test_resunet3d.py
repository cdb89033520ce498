"""ResUNet3d: shapes (odd sizes as the zoom-out crop), the residual block's weightless identity, gradients, GroupNorm
groups, TorchScript equality, and the paper's channel counts."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from common.networks.nets import ResidualBlock3d, ResUNet3d


@pytest.mark.parametrize("shape", [(16, 16, 16), (18, 21, 17)])  # 172 / 8 = 21.5: the zoom-out crop is not a multiple
def test_shapes_and_gradients(shape):
    torch.manual_seed(0)
    net = ResUNet3d(features=(8, 8, 16, 16))
    x = torch.randn(2, 1, *shape, requires_grad=True)
    y = net(x)
    assert y.shape == (2, 1, *shape)
    y.mean().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(p.grad is not None for p in net.parameters())


def test_residual_block_identity_padded_or_cut():
    torch.manual_seed(0)
    for cin, cout in ((8, 16), (16, 8), (8, 8)):
        block = ResidualBlock3d(cin, cout)
        for m in (block.conv2,):  # zero the residual branch's last conv: the block is its identity (after GN+ReLU of 0)
            nn.init.zeros_(m.weight)
            nn.init.zeros_(m.bias)
        x = torch.randn(1, cin, 4, 4, 4)
        want = torch.zeros(1, cout, 4, 4, 4)
        want[:, : min(cin, cout)] = x[:, : min(cin, cout)]
        torch.testing.assert_close(block(x), want)


def test_structure_of_the_paper():
    net = ResUNet3d()
    norms = [m for m in net.modules() if isinstance(m, nn.GroupNorm)]
    assert norms and all(m.num_groups == 8 for m in norms)
    assert [m.out_channels for m in net.modules() if isinstance(m, nn.ConvTranspose3d)] == [128, 64, 32, 1]
    assert sum(isinstance(m, nn.MaxPool3d) for m in net.modules()) == 3
    with pytest.raises(ValueError, match="divisible by num_groups"):
        ResUNet3d(features=(8, 12, 16, 16))


def test_torchscript_equals_eager():
    torch.manual_seed(0)
    net = ResUNet3d(features=(8, 8, 16, 16)).eval()
    x = torch.randn(1, 1, 16, 24, 16)
    scripted = torch.jit.script(net)
    with torch.no_grad():
        torch.testing.assert_close(scripted(x), net(x))
