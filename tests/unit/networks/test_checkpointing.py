"""Activation checkpointing (``checkpoint=True``) of IterativeFCN and ResUNet3d: the same outputs, loss, gradients and
batch-norm running statistics as without it (fp32 and bf16 autocast), less kept for the backward pass, the same weights,
TorchScript copies and eval mode unaffected; bf16 autocast against fp32 within the tolerance the cards state."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from monai.losses import DiceCELoss
from torch import nn

from common.apps.iterative_fcn import InstanceLoss
from common.networks.nets import IterativeFCN, ResUNet3d


def _spine_case() -> tuple[Callable[[bool], nn.Module], torch.Tensor, torch.Tensor, nn.Module]:
    shape = (2, 1, 16, 16, 8)
    label = torch.cat([(torch.rand(shape) > 0.8).float(), 1 + 8 * torch.rand(shape), torch.ones(shape)], dim=1)
    return (
        lambda checkpoint: IterativeFCN(features=4, levels=3, checkpoint=checkpoint),
        torch.rand(2, 2, *shape[2:]),
        label,
        InstanceLoss(),
    )


def _zoom_case() -> tuple[Callable[[bool], nn.Module], torch.Tensor, torch.Tensor, nn.Module]:
    loss = DiceCELoss(sigmoid=True, batch=True, lambda_dice=0.9, lambda_ce=0.1)
    x, label = torch.randn(2, 1, 16, 21, 18), (torch.rand(2, 1, 16, 21, 18) > 0.9).float()  # odd sizes: zoom-out's
    return lambda checkpoint: ResUNet3d(features=(8, 8, 16, 16), checkpoint=checkpoint), x, label, loss


CASES = {"iterative_fcn": _spine_case, "resunet3d": _zoom_case}


def _step(net: nn.Module, x: torch.Tensor, label: torch.Tensor, loss_fn: nn.Module, bf16: bool):
    """One training forward + backward -> (prediction, loss, gradients by name)."""
    net.train().zero_grad()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        pred = net(x)
    loss = loss_fn(pred.float(), label)
    loss.backward()
    return pred.detach(), loss.detach(), {n: p.grad.clone() for n, p in net.named_parameters()}


def _pair(case: str) -> tuple[nn.Module, nn.Module, torch.Tensor, torch.Tensor, nn.Module]:
    torch.manual_seed(0)
    make, x, label, loss_fn = CASES[case]()
    plain, checkpointed = make(False), make(True)
    checkpointed.load_state_dict(plain.state_dict())  # the same keys: weights are interchangeable
    return plain, checkpointed, x, label, loss_fn


@pytest.mark.parametrize("bf16", [False, True], ids=["fp32", "bf16"])
@pytest.mark.parametrize("case", list(CASES))
def test_checkpointed_equals_plain(case, bf16):
    plain, checkpointed, x, label, loss_fn = _pair(case)
    pred, loss, grads = _step(plain, x, label, loss_fn, bf16)
    pred_c, loss_c, grads_c = _step(checkpointed, x, label, loss_fn, bf16)
    torch.testing.assert_close(pred_c, pred, rtol=0, atol=1e-6)
    torch.testing.assert_close(loss_c, loss, rtol=0, atol=1e-6)
    assert grads_c.keys() == grads.keys()
    for name, grad in grads.items():
        torch.testing.assert_close(grads_c[name], grad, rtol=0, atol=1e-6, msg=name)
    # running statistics updated once per step, not again by the recomputation
    torch.testing.assert_close(dict(checkpointed.named_buffers()), dict(plain.named_buffers()), rtol=0, atol=0)


@pytest.mark.parametrize("case", list(CASES))
def test_checkpointed_keeps_less_for_the_backward_pass(case):
    def saved_bytes(net: nn.Module, x: torch.Tensor) -> int:
        storages: dict[int, int] = {}

        def pack(t: torch.Tensor) -> torch.Tensor:
            storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            net.train()(x)
        return sum(storages.values())

    plain, checkpointed, x, _, _ = _pair(case)
    assert saved_bytes(checkpointed, x) < 0.5 * saved_bytes(plain, x)


@pytest.mark.parametrize("case", list(CASES))
def test_eval_mode_and_torchscript_do_not_checkpoint(case):
    plain, checkpointed, x, _, _ = _pair(case)
    scripted = torch.jit.script(checkpointed.eval())
    with torch.no_grad():
        torch.testing.assert_close(scripted(x), plain.eval()(x), rtol=0, atol=0)
        torch.testing.assert_close(checkpointed(x), plain(x), rtol=0, atol=0)
    # a scripted copy in training mode runs without checkpointing (the same forward pass)
    torch.testing.assert_close(scripted.train()(x), plain.train()(x), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("case", list(CASES))
def test_bf16_autocast_is_close_to_fp32(case):
    """bf16 (8-bit mantissa) on these small untrained nets: the loss within 1e-2 relative, the gradient within cosine
    similarity 0.97 of fp32's (measured: relative loss errors 5e-4 and 5e-5, cosines 0.988 and 0.997; single
    parameters' gradients differ by up to about 20 % where they are sums of nearly cancelling terms)."""
    plain, _, x, label, loss_fn = _pair(case)
    _, loss, grads = _step(plain, x, label, loss_fn, bf16=False)
    _, loss_bf16, grads_bf16 = _step(plain, x, label, loss_fn, bf16=True)
    assert abs(loss_bf16 - loss) / abs(loss) < 1e-2
    flat, flat_bf16 = (torch.cat([g.flatten() for g in gs.values()]) for gs in (grads, grads_bf16))
    assert torch.nn.functional.cosine_similarity(flat, flat_bf16, dim=0) > 0.97
