"""IterativeFCN: shapes, one completeness value per patch, no weights shared across levels, gradients."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from common.networks.nets import IterativeFCN


def test_shapes_completeness_and_gradients():
    net = IterativeFCN(features=4, levels=4)
    x = torch.randn(3, 2, 16, 8, 24, requires_grad=True)
    y = net(x)
    assert y.shape == (3, 2, 16, 8, 24)
    assert torch.all(y[:, 1] == y[:, 1, :1, :1, :1])  # completeness: one value per patch
    y[:, 0].mean().backward(retain_graph=True)
    assert x.grad.abs().sum() > 0
    net.zero_grad()
    y[:, 1, 0, 0, 0].sum().backward()
    assert net.complete.weight.grad.abs().sum() > 0 and net.segment.weight.grad.abs().sum() == 0


def test_every_level_has_its_own_weights_and_constant_channels():
    net = IterativeFCN(features=8, levels=4)
    convs = [m for m in net.modules() if isinstance(m, nn.Conv3d)]
    assert len({id(m.weight) for m in convs}) == len(convs) == 2 * 4 + 2 * 3 + 2
    assert {m.out_channels for m in convs} == {8, 1}
    assert isinstance(net.upsample, nn.Upsample) and net.upsample.mode == "nearest"
    assert convs[0].in_channels == 2


def test_scripted_equals_eager_and_levels_checked():
    net = IterativeFCN(features=4, levels=3).eval()
    x = torch.randn(1, 2, 8, 8, 8)
    torch.testing.assert_close(torch.jit.script(net)(x), net(x))
    with pytest.raises(ValueError, match="levels"):
        IterativeFCN(levels=1)
