"""IterativeFCN: shapes, one completeness value per patch, no weights shared across levels, gradients."""

from __future__ import annotations

import pytest
import torch
from monai.bundle import ConfigParser
from monai.engines import SupervisedTrainer
from torch import nn

from common.apps.iterative_fcn import InstanceLoss
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


def test_low_memory_override_updates_as_the_full_batch():
    """``configs/low_memory.json`` of iterative_fcn_spine: checkpointing on, half the cases per micro-batch and two
    micro-batches per optimizer step (MONAI's ``accumulation_steps``), so as many patches per update as the default.
    Without batch norm the update equals the full batch's (InstanceLoss is a mean over patches); with it (the default
    network) each micro-batch is normalised by its own statistics, as the card says."""
    configs = "bundles/iterative_fcn_spine/configs"
    runs = {}
    for name, files in {"default": ["train.json"], "low_memory": ["train.json", "low_memory.json"]}.items():
        parser = ConfigParser()
        parser.read_config([f"{configs}/{f}" for f in files])
        parser.update({"features": 4, "levels": 3, "network_def#norm": False, "device": "$torch.device('cpu')"})
        steps = parser.get_parsed_content("train#trainer#accumulation_steps", default=1)
        patches = parser.get_parsed_content("batch_size") * parser.get_parsed_content("samples_per_case")
        torch.manual_seed(0)
        net = parser.get_parsed_content("network_def")
        runs[name] = (net, steps, patches)
    (net, steps, patches), (net_low, steps_low, patches_low) = runs["default"], runs["low_memory"]
    assert (steps, steps_low) == (1, 2) and patches == steps_low * patches_low == 4
    assert not any(getattr(m, "checkpoint", False) for m in net.modules())
    assert all(b.checkpoint for b in [*net_low.down, *net_low.up])
    torch.manual_seed(1)
    shape = (patches, 1, 16, 16, 8)
    label = torch.cat([(torch.rand(shape) > 0.8).float(), 1 + 8 * torch.rand(shape), torch.ones(shape)], dim=1)
    batch = {"image": torch.rand(patches, 2, *shape[2:]), "label": label}
    halves = [{k: v[i * patches_low : (i + 1) * patches_low] for k, v in batch.items()} for i in range(steps_low)]
    for model, data, acc in ((net, [batch], steps), (net_low, halves, steps_low)):
        optimizer = torch.optim.SGD(model.parameters(), lr=1.0)  # the update is the gradient: a sensitive check
        SupervisedTrainer(torch.device("cpu"), 1, data, model, optimizer, InstanceLoss(), accumulation_steps=acc).run()
    torch.testing.assert_close(net_low.state_dict(), net.state_dict(), rtol=0, atol=1e-6)
