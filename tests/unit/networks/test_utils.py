"""optimize_for_inference: same outputs as the eval-mode net, folded norms, the original left untouched."""

from __future__ import annotations

import pytest
import torch
from monai.networks.blocks import Convolution

from common.networks import optimize_for_inference
from common.networks.nets import PNet, rnet

SMALL = {"features": (4, 5, 4, 6, 4), "compress": 3, "head_channels": 5}


def with_running_statistics(net: torch.nn.Module, x: torch.Tensor) -> torch.nn.Module:
    """Batch norms with non-trivial running means, variances and affine parameters (a trained net's state)."""
    for m in net.modules():
        if isinstance(m, (torch.nn.BatchNorm2d, torch.nn.BatchNorm3d)):
            m.momentum = 0.5
            torch.nn.init.uniform_(m.weight, 0.5, 2.0)
            torch.nn.init.uniform_(m.bias, -0.5, 0.5)
    net.train()
    with torch.no_grad():
        for _ in range(3):
            net(x * 3 + 1)
    return net.eval()


@pytest.mark.parametrize("spatial_dims, size", [(2, (23, 19)), (3, (13, 11, 6))])
def test_outputs_match_the_eval_net_and_norms_are_folded(spatial_dims: int, size: tuple[int, ...]) -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 4, *size)
    net = with_running_statistics(rnet(spatial_dims, **SMALL), x)
    fast = optimize_for_inference(net)
    with torch.no_grad():
        torch.testing.assert_close(fast(x), net(x), rtol=1e-4, atol=1e-5)
    norms = [m for m in fast.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    assert not norms  # every batch norm follows a convolution in P-Net: all folded
    relus = [m for m in fast.modules() if isinstance(m, torch.nn.ReLU)]
    assert relus and all(r.inplace for r in relus)
    fmt = torch.channels_last if spatial_dims == 2 else torch.channels_last_3d
    conv = dict(fast.named_modules())["blocks.1.0.conv"]
    assert conv.weight.is_contiguous(memory_format=fmt)


def test_the_original_net_is_left_unchanged() -> None:
    torch.manual_seed(0)
    net = PNet(3, **SMALL).train()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    optimize_for_inference(net)
    assert net.training
    assert before.keys() == net.state_dict().keys()
    for k, v in net.state_dict().items():
        torch.testing.assert_close(v, before[k])
        assert v.is_contiguous()


def test_instance_norm_and_unnormalised_blocks_are_left_as_they_are() -> None:
    torch.manual_seed(0)
    net = PNet(2, **SMALL, norm="instance").eval()
    fast = optimize_for_inference(net, channels_last=False)
    x = torch.randn(1, 1, 21, 17)
    with torch.no_grad():
        torch.testing.assert_close(fast(x), net(x))
    assert sum(isinstance(m, torch.nn.InstanceNorm2d) for m in fast.modules()) == sum(
        isinstance(m, torch.nn.InstanceNorm2d) for m in net.modules()
    )
    plain = Convolution(2, 3, 4, kernel_size=3, conv_only=True).eval()
    torch.testing.assert_close(optimize_for_inference(plain)(x.repeat(1, 3, 1, 1)), plain(x.repeat(1, 3, 1, 1)))


class _SkipAroundReLU(torch.nn.Module):
    """conv -> batch norm -> ReLU, with the batch norm's output also used after the ReLU (a skip)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(2, 3, 3, padding=1)
        self.norm = torch.nn.BatchNorm2d(3)
        self.relu = torch.nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.norm(self.conv(x))
        return self.relu(y) + y


def test_relu_stays_out_of_place_when_its_input_is_used_again() -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 2, 9, 7)
    net = with_running_statistics(_SkipAroundReLU(), x.repeat(1, 1, 1, 1))
    fast = optimize_for_inference(net)
    assert not dict(fast.named_modules())["relu"].inplace
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fast.modules())
    with torch.no_grad():
        torch.testing.assert_close(fast(x), net(x), rtol=1e-4, atol=1e-5)
