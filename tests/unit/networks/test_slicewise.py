"""SliceWise: a 2D network applied slice by slice equals the explicit loop over slices, in training and chunked in
eval mode; state dict under net.; TorchScript; errors."""

from __future__ import annotations

import warnings

import pytest
import torch

from common.networks.nets import PNet, SliceWise

SMALL = {"features": (4, 4, 4, 4, 4), "compress": 2, "head_channels": 4}


def loop_over_slices(net: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Reference: every slice of every volume through ``net`` on its own, stacked back along the last axis."""
    return torch.stack(
        [torch.cat([net(x[b : b + 1, ..., k]) for b in range(x.shape[0])]) for k in range(x.shape[-1])], dim=-1
    )


@pytest.mark.parametrize("chunk", [0, 1, 3, 50])
def test_eval_equals_the_loop_over_slices(chunk: int) -> None:
    torch.manual_seed(0)
    net = PNet(2, in_channels=2, out_channels=3, **SMALL).eval()
    x = torch.randn(2, 2, 11, 13, 7)
    out = SliceWise(net, chunk=chunk).eval()(x)
    assert out.shape == (2, 3, 11, 13, 7)
    torch.testing.assert_close(out, loop_over_slices(net, x), atol=1e-5, rtol=1e-5)


def test_a_slice_classifier_gives_one_output_per_slice() -> None:
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(2, 3, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten()).eval()
    x = torch.randn(2, 2, 7, 8, 5)
    out = SliceWise(net, chunk=2).eval()(x)
    assert out.shape == (2, 3, 5)
    torch.testing.assert_close(out, loop_over_slices(net, x), atol=1e-6, rtol=1e-6)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.testing.assert_close(torch.jit.script(SliceWise(net, chunk=2).eval())(x), out)


def test_training_normalises_over_every_slice_of_the_batch() -> None:
    torch.manual_seed(0)
    net = PNet(2, in_channels=1, out_channels=2, **SMALL, dropout=0.0).train()
    x = torch.randn(2, 1, 9, 10, 5)
    slices = x.permute(0, 4, 1, 2, 3).reshape(10, 1, 9, 10)  # batch norm over these 10 slices together
    expected = net(slices).reshape(2, 5, 2, 9, 10).permute(0, 2, 3, 4, 1)
    torch.testing.assert_close(SliceWise(net, chunk=2).train()(x), expected)  # chunking is for eval only


def test_state_dict_is_the_2d_network_under_net_and_scripts() -> None:
    net = PNet(2, **SMALL).eval()
    wrapped = SliceWise(net, chunk=4).eval()
    assert list(wrapped.state_dict()) == [f"net.{k}" for k in net.state_dict()]
    x = torch.randn(1, 1, 8, 9, 6)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        scripted = torch.jit.script(wrapped)
    torch.testing.assert_close(scripted(x), wrapped(x))


def test_errors() -> None:
    with pytest.raises(ValueError, match="chunk: expected 0"):
        SliceWise(PNet(2, **SMALL), chunk=-1)
    with pytest.raises(
        ValueError, match=r"x: expected a batch of volumes \(B, C, H, W, D\), found shape \[1, 1, 8, 9\]"
    ):
        SliceWise(PNet(2, **SMALL))(torch.randn(1, 1, 8, 9))
