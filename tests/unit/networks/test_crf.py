"""CRF-Net: gradients, limit cases, clamping, a denoising effect, TorchScript, and argument errors."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch.func import functional_call

from common.networks.blocks import CRFNet, PairwiseNet


def tiny(spatial_dims: int, checkpoint: bool, seed: int = 0) -> tuple[CRFNet, torch.Tensor, torch.Tensor]:
    torch.manual_seed(seed)
    crf = CRFNet(
        spatial_dims, num_classes=3, feature_channels=2, window=3, iterations=2, hidden=(4, 3), checkpoint=checkpoint
    ).double()
    torch.nn.init.normal_(crf.pairwise.out.weight)  # away from the zero init, so every layer gets a gradient
    for layer in crf.pairwise.layers:
        torch.nn.init.uniform_(layer.bias, 0.5, 1.0)  # live ReLUs: otherwise a tiny net can be flat in its inputs
    torch.nn.init.normal_(crf.compatibility)
    shape = (5, 4) if spatial_dims == 2 else (3, 4, 3)
    return crf, torch.randn(1, 3, *shape, dtype=torch.float64), torch.randn(1, 2, *shape, dtype=torch.float64)


@pytest.mark.parametrize("spatial_dims", [2, 3])
@pytest.mark.parametrize("checkpoint", [True, False])
def test_gradcheck_unary_features_and_pairwise_net(spatial_dims: int, checkpoint: bool) -> None:
    crf, logits, feats = tiny(spatial_dims, checkpoint)
    names = [n for n, _ in crf.named_parameters()]
    params = [p.detach().clone().requires_grad_() for _, p in crf.named_parameters()]
    seeds = torch.zeros_like(logits)
    seeds[0, 1, 1, 1] = 1.0

    def run(lg: torch.Tensor, ft: torch.Tensor, *ps: torch.Tensor) -> torch.Tensor:
        return functional_call(crf, dict(zip(names, ps)), (lg, ft, seeds))

    inputs = (logits.requires_grad_(), feats.requires_grad_(), *params)
    # the full Jacobian once (2D, no checkpointing); random projections of it (fast mode) for the other cases
    full = spatial_dims == 2 and not checkpoint
    assert torch.autograd.gradcheck(run, inputs, eps=1e-6, atol=1e-5, fast_mode=not full)
    grads = torch.autograd.grad(run(*inputs)[:, 0].sum(), params)
    assert all(g.abs().sum() > 0 for g in grads)  # the Pairwise-Net and compatibility are really trained


def test_checkpointing_changes_memory_not_results() -> None:
    crf_a, logits, feats = tiny(2, checkpoint=True)
    crf_b, _, _ = tiny(2, checkpoint=False)
    la, lb = logits.clone().requires_grad_(), logits.clone().requires_grad_()
    qa, qb = crf_a(la, feats), crf_b(lb, feats)
    torch.testing.assert_close(qa, qb)
    (qa[:, 1] ** 2).sum().backward()
    (qb[:, 1] ** 2).sum().backward()
    torch.testing.assert_close(la.grad, lb.grad)
    for pa, pb in zip(crf_a.parameters(), crf_b.parameters()):
        torch.testing.assert_close(pa.grad, pb.grad)


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_without_pairwise_term_output_is_softmax_of_unary(spatial_dims: int) -> None:
    crf, logits, feats = tiny(spatial_dims, checkpoint=False)
    with torch.no_grad():
        crf.compatibility.zero_()
    torch.testing.assert_close(crf(logits, feats), torch.softmax(logits, 1))
    crf.iterations = 0
    torch.nn.init.normal_(crf.compatibility)
    torch.testing.assert_close(crf(logits, feats), torch.softmax(logits, 1))


def test_pair_weights_are_symmetric_and_zero_across_the_border() -> None:
    crf, _, feats = tiny(2, checkpoint=False)
    weights = crf.pair_weights(feats)
    offsets = crf.half_offsets + [[-o for o in off] for off in crf.half_offsets]
    h, w = feats.shape[2:]
    for weight, (dy, dx) in zip(weights, offsets):
        for y in range(h):
            for x in range(w):
                inside = 0 <= y + dy < h and 0 <= x + dx < w
                if not inside:
                    assert weight[:, 0, y, x].abs().max() == 0
                    continue
                back = weights[offsets.index([-dy, -dx])][:, 0, y + dy, x + dx]
                torch.testing.assert_close(weight[:, 0, y, x], back)  # w(i, j) = w(j, i)


@pytest.mark.parametrize("iterations", [1, 2, 4])
def test_clamped_voxels_hold_their_label_after_every_iteration(iterations: int) -> None:
    torch.manual_seed(1)
    crf = CRFNet(2, num_classes=2, window=5, iterations=iterations)
    logits = torch.randn(1, 2, 16, 16) * 3
    seeds = torch.zeros(1, 2, 16, 16)
    seeds[0, 1, 3, 4] = seeds[0, 1, 9, 9] = 1.0  # foreground clicks
    seeds[0, 0, 12, 2] = 1.0  # a background click
    q = crf(logits, torch.randn(1, 1, 16, 16), seeds)
    assert q[0, 1, 3, 4] == 1 and q[0, 1, 9, 9] == 1 and q[0, 0, 12, 2] == 1
    free = crf(logits, torch.randn(1, 1, 16, 16))
    assert torch.allclose(q.sum(1), torch.ones(1, 16, 16)) and not torch.allclose(q, free)


def toy_problem() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A disk; the unary is its +-1.5 logit map under strong noise; the features a mildly noisy image of it."""
    g = torch.Generator().manual_seed(0)
    yy, xx = torch.meshgrid(torch.arange(40.0), torch.arange(40.0), indexing="ij")
    mask = (((yy - 20) ** 2 + (xx - 18) ** 2) < 12**2).float()
    fg = 1.5 * (2 * mask - 1) + 2.5 * torch.randn(40, 40, generator=g)
    logits = torch.stack([-fg / 2, fg / 2])[None]
    image = (mask + 0.2 * torch.randn(40, 40, generator=g))[None, None]
    return logits, image, mask


def dice(a: torch.Tensor, b: torch.Tensor) -> float:
    return (2 * (a * b).sum() / (a.sum() + b.sum())).item()


def test_a_few_iterations_raise_dice_on_a_noisy_unary() -> None:
    logits, image, mask = toy_problem()
    before = dice(logits.argmax(1)[0].float(), mask)
    scores = []
    for iterations in (1, 3):
        with torch.no_grad():
            q = CRFNet(2, 2, 1, window=5, iterations=iterations)(logits, image)
        scores.append(dice(q.argmax(1)[0].float(), mask))
    assert before < 0.6 and scores[0] > before + 0.05 and scores[1] > scores[0]


def test_training_the_pairwise_net_improves_on_the_untrained_crf() -> None:
    logits, image, mask = toy_problem()
    torch.manual_seed(0)
    crf = CRFNet(2, 2, 1, window=5, iterations=3)
    opt = torch.optim.Adam(crf.parameters(), lr=0.05)
    target = mask.long()[None]
    losses = []
    for _ in range(15):
        loss = torch.nn.functional.nll_loss(torch.log(crf(logits, image).clamp_min(1e-6)), target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0]


def test_torchscript_matches_eager() -> None:
    crf, logits, feats = tiny(3, checkpoint=True)
    seeds = torch.zeros_like(logits)
    seeds[:, 2, 0, 0, 0] = 1.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scripted = torch.jit.script(crf)
    torch.testing.assert_close(scripted(logits, feats), crf(logits, feats))
    torch.testing.assert_close(scripted(logits, feats, seeds), crf(logits, feats, seeds))
    lg = logits.clone().requires_grad_()
    scripted(lg, feats).sum().backward()  # trainable when scripted too (without checkpointing)
    assert lg.grad is not None


@pytest.mark.parametrize("checkpoint", [True, False])
def test_torch_export_matches_eager_and_is_trainable(checkpoint: bool) -> None:
    crf, logits, feats = tiny(3, checkpoint=checkpoint)
    seeds = torch.zeros_like(logits)
    seeds[:, 0, 1, 2, 1] = 1.0
    exported = torch.export.export(crf, (logits, feats, seeds)).module()
    other = torch.randn_like(logits)  # new values through the same graph
    torch.testing.assert_close(exported(other, feats, seeds), crf(other, feats, seeds))
    lg = other.clone().requires_grad_()
    exported(lg, feats, seeds)[:, 1].sum().backward()
    ref = other.clone().requires_grad_()
    crf(ref, feats, seeds)[:, 1].sum().backward()
    torch.testing.assert_close(lg.grad, ref.grad)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"spatial_dims": 1}, "spatial_dims: expected"),
        ({"num_classes": 1}, "num_classes: expected"),
        ({"window": 4}, "window: expected"),
        ({"window": (3, 3, 3)}, "window: expected"),
        ({"window": 1}, "window: expected"),
        ({"iterations": -1}, "iterations: expected"),
        ({"hidden": ()}, "hidden: expected"),
    ],
)
def test_bad_arguments_fail_in_init(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        CRFNet(**kwargs)


def test_window_per_axis_and_shape_errors() -> None:
    crf = CRFNet(3, 2, window=(3, 3, 1), iterations=1)
    assert len(crf.half_offsets) == 4  # in-plane 3x3 only: 8 neighbours, half of them computed
    with pytest.raises(ValueError, match="logits, features: expected"):
        crf(torch.zeros(1, 2, 4, 4), torch.zeros(1, 1, 4, 4))
    with pytest.raises(ValueError, match="seeds: expected the shape of logits"):
        crf(torch.zeros(1, 2, 4, 4, 3), torch.zeros(1, 1, 4, 4, 3), torch.zeros(1, 1, 4, 4, 3))
    with pytest.raises(ValueError, match="chunk: expected"):
        PairwiseNet(chunk=0)


@pytest.mark.parametrize("spatial_dims", [2, 3])
@pytest.mark.parametrize("constant", [False, True])
def test_piecewise_linear_pairwise_net_equals_the_mlp(spatial_dims: int, constant: bool) -> None:
    """Without gradients the one-channel Pairwise-Net runs as the piecewise-linear function it is: the same weights
    as the MLP on every voxel (the MLP path, taken with gradients on, is the reference), also for a constant input
    (one breakpoint) and for random, not the zero-initialised, output layers."""
    torch.manual_seed(spatial_dims)
    net = PairwiseNet(1, spatial_dims, hidden=(32, 16))
    for p in net.parameters():
        torch.nn.init.normal_(p)
    diff = torch.full((2, 30, 40, 1), 0.7) if constant else torch.rand(2, 30, 40, 1) * 4
    offset = torch.tensor([1.0, 0.0, 1.0][:spatial_dims])
    reference = net(diff, offset).detach()  # gradients on: the MLP on every voxel
    with torch.no_grad():
        fast = net(diff, offset)
    assert fast.shape == reference.shape == (2, 30, 40)
    torch.testing.assert_close(fast, reference, rtol=1e-5, atol=1e-5 * float(reference.abs().max()))
    with torch.no_grad():  # a voxel's weight does not depend on the rest of the input: a part gives the same bits
        assert torch.equal(net(diff[:, 5:17, 3:11], offset), fast[:, 5:17, 3:11])
    if not constant:  # the breakpoints matter: the line through the two ends is far off
        x = diff[..., 0]
        lo, hi = x.min(), x.max()
        ends = net(torch.stack([lo, hi]).reshape(2, 1), offset).detach()
        line = ends[0] + (x - lo) / (hi - lo) * (ends[1] - ends[0])
        assert float((line - reference).abs().max()) > 100 * float((fast - reference).abs().max())
