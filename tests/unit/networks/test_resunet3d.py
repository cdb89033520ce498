"""ResUNet3d: shapes (odd sizes as the zoom-out crop), the residual block's weightless identity, gradients, GroupNorm
groups, TorchScript equality, the paper's channel counts, the original's parameter count and outputs equal to a
reference rebuilt from the original code's description (tests/support/resunet_reference.py) with the same weights."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from common.networks.nets import ResidualBlock3d, ResUNet3d
from tests.support.resunet_reference import OriginalResBlock, OriginalUNet3D


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


def test_residual_block_identity_padded_or_cut_at_the_front():
    """Zero channels prepended where channels grow; the last ``out`` channels kept where they shrink (the original)."""
    torch.manual_seed(0)
    for cin, cout in ((8, 16), (16, 8), (8, 8)):
        block = ResidualBlock3d(cin, cout)
        for m in (block.conv2,):  # zero the residual branch's last conv: the block is its identity (after GN+ReLU of 0)
            nn.init.zeros_(m.weight)
            nn.init.zeros_(m.bias)
        x = torch.randn(1, cin, 4, 4, 4)
        want = torch.zeros(1, cout, 4, 4, 4)
        want[:, max(cout - cin, 0) :] = x[:, max(cin - cout, 0) :]
        torch.testing.assert_close(block(x), want)


def _copy_by_position(src: nn.Module, dst: nn.Module) -> None:
    src_state, dst_keys = list(src.state_dict().values()), list(dst.state_dict())
    assert [tuple(v.shape) for v in src_state] == [tuple(v.shape) for v in dst.state_dict().values()]
    dst.load_state_dict(dict(zip(dst_keys, src_state)))


@pytest.mark.parametrize("cin, cout", [(16, 8), (8, 16), (8, 8)])
def test_block_equals_the_original_with_the_same_weights(cin, cout):
    torch.manual_seed(0)
    block = ResidualBlock3d(cin, cout).eval()
    original, back = OriginalResBlock(cin, cout).eval(), OriginalResBlock(cin, cout, shortcut="back").eval()
    _copy_by_position(block, original)
    _copy_by_position(block, back)
    x = torch.randn(2, cin, 6, 5, 4)
    with torch.no_grad():
        torch.testing.assert_close(block(x), original(x), rtol=0, atol=0)
        if cin != cout:  # the other end of the channel axis is another block
            assert (block(x) - back(x)).abs().max() > 0.1


def test_network_equals_the_original_with_the_same_weights():
    """Small levels (inplanes 4: 8/16/32/64 channels) on an odd size as the zoom-out crop's 172 / 8: equal outputs with
    the original's front padding, different ones with the back padding the project used before."""
    torch.manual_seed(0)
    net = ResUNet3d(features=(8, 16, 32, 64)).eval()
    original, back = OriginalUNet3D(inplanes=4).eval(), OriginalUNet3D(inplanes=4, shortcut="back").eval()
    _copy_by_position(net, original)
    _copy_by_position(net, back)
    x = torch.randn(1, 1, 16, 21, 18)
    with torch.no_grad():
        y = net(x)
        torch.testing.assert_close(y, original(x), rtol=0, atol=0)
        assert (y - back(x)).abs().max() > 0.1


def test_default_has_the_original_parameter_count():
    """The original as run, ``UNet3D(1, 1, inplanes=16)``: 32/64/128/256 channels, 18,438,561 parameters."""
    assert sum(p.numel() for p in ResUNet3d().parameters()) == 18_438_561
    assert sum(p.numel() for p in OriginalUNet3D(inplanes=16).parameters()) == 18_438_561


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
