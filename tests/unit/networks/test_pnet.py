"""P-Net / R-Net: shapes, receptive field in-plane and across slices (3d and 2.5d), kernels, TorchScript, and joint
training with CRF-Net."""

from __future__ import annotations

import warnings

import pytest
import torch

from common.networks.blocks import CRFNet
from common.networks.nets import PNet, rnet

SMALL = {"features": (4, 4, 4, 4, 4), "compress": 2, "head_channels": 4}


@pytest.mark.parametrize(
    "spatial_dims, size, context", [(2, (33, 34), "3d"), (3, (17, 18, 5), "3d"), (3, (17, 18, 5), "2.5d")]
)
def test_output_keeps_the_input_size(spatial_dims: int, size: tuple[int, ...], context: str) -> None:
    net = PNet(spatial_dims, in_channels=1, out_channels=3, **SMALL, context=context).eval()
    assert net(torch.randn(2, 1, *size)).shape == (2, 3, *size)
    r = rnet(spatial_dims, **SMALL, context=context).eval()
    assert r(torch.randn(1, 4, *size)).shape == (1, 2, *size)
    with pytest.raises(RuntimeError):
        r(torch.randn(1, 1, *size))  # R-Net takes image, P-Net label and two geodesic maps


def influence(net: PNet, shape: tuple[int, ...], where: tuple[int, ...]) -> torch.Tensor:
    """Where the output changes when one input voxel at ``where`` is perturbed (eval mode, exact arithmetic)."""
    x = torch.zeros(1, 1, *shape, dtype=torch.float64)
    y0 = net(x)
    x[(0, 0, *where)] = 1.0
    return (net(x) - y0).abs().sum(1)[0] > 0


def positive(net: PNet) -> PNet:
    """Positive weights: every ReLU passes, nothing cancels, so any path from input to output shows."""
    for p in net.parameters():
        torch.nn.init.uniform_(p, 0.1, 0.2)
    return net.double().eval()


def test_2d_receptive_field_is_181_pixels() -> None:
    net = positive(PNet(2, **SMALL, norm=None))
    changed = influence(net, (1, 200), (0, 5))[0]
    reach = changed.nonzero().flatten()
    assert reach.min() == 0 and reach.max() == 5 + 90  # 2 * (1*2 + 2*2 + 4*3 + 8*3 + 16*3) + 1 = 181


def slices_reached(net: PNet, shape: tuple[int, int, int]) -> list[int]:
    """Slices (last axis) of the input that the centre output voxel depends on: where its gradient is non-zero."""
    x = torch.zeros(1, 1, *shape, dtype=torch.float64, requires_grad=True)
    net(x)[(0, 1, *(s // 2 for s in shape))].backward()
    return x.grad[0, 0].abs().sum((0, 1)).nonzero().flatten().tolist()


@pytest.mark.parametrize("context, reach", [("3d", 90), ("block", 31), ("2.5d", 1)])
def test_3d_receptive_field_along_the_slice_axis(context: str, reach: int) -> None:
    net = positive(PNet(3, **SMALL, norm=None, context=context))
    depth = 2 * reach + 11  # slices beyond the reach on both sides
    centre = depth // 2
    # 3d: 2 * (1*2 + 2*2 + 4*3 + 8*3 + 16*3) + 1 = 181 slices, as in-plane; block: 2 * (1 + 2 + 4 + 8 + 16) + 1 = 63;
    # 2.5d: the first 3x3x3 convolution only
    assert slices_reached(net, (5, 5, depth)) == list(range(centre - reach, centre + reach + 1))


@pytest.mark.parametrize("context", ["3d", "block", "2.5d"])
def test_3d_kernels_and_dilations(context: str) -> None:
    net = PNet(3, **SMALL, context=context)
    convs = [m for m in net.blocks.modules() if isinstance(m, torch.nn.Conv3d)]
    block_dilations = [d for d, n in zip((1, 2, 4, 8, 16), (2, 2, 3, 3, 3)) for _ in range(n)]
    if context == "3d":
        expected = [((3, 3, 3), (d, d, d)) for d in block_dilations]
    elif context == "block":
        firsts = [sum((2, 2, 3, 3, 3)[:b]) for b in range(5)]
        expected = [
            ((3, 3, 3), (d, d, d)) if i in firsts else ((3, 3, 1), (d, d, 1)) for i, d in enumerate(block_dilations)
        ]
    else:
        expected = [((3, 3, 3), (1, 1, 1))] + [((3, 3, 1), (d, d, 1)) for d in block_dilations[1:]]
    assert [(m.kernel_size, m.dilation) for m in convs] == expected
    assert all(m.padding == tuple(d * (k // 2) for k, d in zip(m.kernel_size, m.dilation)) for m in convs)


def test_torchscript_matches_eager() -> None:
    net = PNet(3, in_channels=4, **SMALL).eval()
    x = torch.randn(1, 4, 9, 8, 3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scripted = torch.jit.script(net)
    torch.testing.assert_close(scripted(x), net(x))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"spatial_dims": 1}, "spatial_dims: expected"),
        ({"dilations": (1, 2)}, "expected equal non-zero lengths"),
        ({"compress": 0}, "expected positive values"),
        ({"dropout": 1.0}, "dropout: expected"),
        ({"spatial_dims": 3, "context": "3D"}, r"context: expected one of \('3d', 'block', '2.5d'\), found '3D'"),
        ({"spatial_dims": 2, "context": "2.5d"}, "context: expected '3d' .* for spatial_dims=2, found '2.5d'"),
    ],
)
def test_bad_arguments_fail_in_init(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        PNet(**kwargs)


def disks(n: int, size: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Noisy images of one bright disk each (random centre and radius) and their masks."""
    yy, xx = torch.meshgrid(torch.arange(size * 1.0), torch.arange(size * 1.0), indexing="ij")
    centres = torch.randint(8, size - 8, (n, 2), generator=generator).float()
    radii = torch.randint(4, 8, (n,), generator=generator).float()
    masks = ((yy - centres[:, :1, None]) ** 2 + (xx - centres[:, 1:, None]) ** 2) < radii[:, None, None] ** 2
    images = masks.float() + 0.3 * torch.randn(n, size, size, generator=generator)
    return images[:, None], masks.long()


def test_pnet_and_crf_train_jointly_and_the_loss_falls() -> None:
    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    images, masks = disks(4, 24, g)
    net = PNet(2, features=(8,) * 5, compress=4, head_channels=8, dropout=0.1)
    crf = CRFNet(2, num_classes=2, window=3, iterations=2)
    opt = torch.optim.Adam([*net.parameters(), *crf.parameters()], lr=3e-3)
    losses = []
    for _ in range(30):
        q = crf(net(images), images)
        loss = torch.nn.functional.nll_loss(torch.log(q.clamp_min(1e-6)), masks)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert sum(losses[-5:]) / 5 < 0.6 * sum(losses[:5]) / 5
    assert crf.pairwise.out.weight.grad.abs().sum() > 0 and crf.compatibility.grad.abs().sum() > 0
