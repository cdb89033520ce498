"""Training samples, instance memory, traversal order and the loss."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from common.apps.iterative_fcn import InstanceLoss, InstanceMemory, InstanceSampled, crop_padded, traversal_order
from common.data import VERSE_ORDER
from common.transforms import boundary_weights


def case() -> dict:
    lab = np.zeros((1, 24, 24, 40), dtype=np.float32)
    for value, z in zip((8, 9, 10), (32, 20, 8)):
        lab[0, 8:16, 8:16, z - 4 : z + 4] = value
    image = (lab > 0).astype(np.float32) * 0.7
    return {"image": image, "label": lab, "weight": boundary_weights(lab[0])[None], "case": "c1"}


def test_memory_is_the_vertebrae_before_the_target_and_every_fifth_sample_is_empty():
    d = case()
    sampler = InstanceSampled(patch_size=(16, 16, 16), num_samples=20, jitter=0.3, order=None)
    sampler.set_random_state(seed=0)
    samples = sampler(d)
    assert len(samples) == 20
    for i, s in enumerate(samples):
        assert s["image"].shape == (2, 16, 16, 16) and s["label"].shape == (3, 16, 16, 16)
        k = s["vertebra"]
        # recover where the patch was cut from: the image channel is 0.7 on every vertebra voxel
        if (i + 1) % 5 == 0:
            assert k == 0 and s["label"][0].sum() == 0 and s["label"][2].max() == 0
            assert torch.equal(s["image"][1] > 0, s["image"][0] > 0)  # memory = every vertebra in the patch
            continue
        assert k in (8, 9, 10)
        target, memory = s["label"][0] > 0, s["image"][1] > 0
        assert target.any() and not (target & memory).any()
        assert torch.all(s["label"][2] == s["label"][2].flatten()[0])  # one completeness value per patch
        if k == 8:
            assert not memory.any()  # nothing before the first vertebra


def test_completeness_label_is_the_98_percent_rule():
    d = case()
    sampler = InstanceSampled(patch_size=(16, 16, 16), num_samples=40, empty_every=0, jitter=0.45)
    sampler.set_random_state(seed=1)
    seen = set()
    for s in sampler(d):
        voxels = int((s["label"][0] > 0).sum())
        expected = float(voxels >= 0.98 * 8 * 8 * 8)
        assert float(s["label"][2, 0, 0, 0]) == expected
        seen.add(expected)
    assert seen == {0.0, 1.0}


def test_seeded_sampler_repeats_per_case():
    d = case()
    a = InstanceSampled(patch_size=(16, 16, 16), num_samples=4, seed=3)
    first, second = a(d), a(d)
    assert all(torch.equal(x["image"], y["image"]) for x, y in zip(first, second))


def test_traversal_order_and_unknown_values():
    assert traversal_order([0, 20, 28, 19, 25], VERSE_ORDER) == [19, 28, 20, 25]
    assert traversal_order([3, 1, 0, 2]) == [1, 2, 3]
    with pytest.raises(ValueError, match=r"found \[30\]"):
        traversal_order([1, 30], VERSE_ORDER)


def test_crop_padded_and_memory():
    a = np.arange(2 * 4 * 4 * 4).reshape(2, 4, 4, 4)
    c = crop_padded(a, (-1, 2, 0), (3, 3, 4), value=-5)
    assert c.shape == (2, 3, 3, 4) and (c[:, 0] == -5).all() and (c[:, 1:, 2:] == -5).all()
    np.testing.assert_array_equal(c[:, 1:, :2], a[:, :2, 2:4])
    m = InstanceMemory((4, 4, 4))
    sl = (slice(0, 2), slice(0, 4), slice(0, 4))
    assert m.add(sl, torch.ones(2, 4, 4, dtype=torch.bool)) == 1
    assert m.add((slice(1, 3), slice(0, 4), slice(0, 4)), torch.ones(2, 4, 4, dtype=torch.bool)) == 2
    assert (m.labels[1] == 1).all() and (m.labels[2] == 2).all()  # voxels already taken are kept
    assert m.patch(sl).sum() == 32


def test_loss_matches_the_formula_and_has_gradients():
    g = torch.Generator().manual_seed(0)
    pred = torch.randn(2, 2, 4, 4, 4, generator=g, requires_grad=True)
    t = (torch.rand(2, 4, 4, 4, generator=g) > 0.5).float()
    w = 1 + torch.rand(2, 4, 4, 4, generator=g)
    c = torch.tensor([1.0, 0.0])
    label = torch.stack([t, w, c[:, None, None, None].expand_as(t)], 1)
    loss = InstanceLoss(fp_weight=0.1)(pred, label)
    p = torch.sigmoid(pred[:, 0])
    expected = []
    for b in range(2):
        fp = (w[b] * p[b] * (1 - t[b])).sum() / w[b].sum()
        fn = (w[b] * (1 - p[b]) * t[b]).sum() / w[b].sum()
        q = torch.sigmoid(pred[b, 1, 0, 0, 0])
        bce = -(c[b] * torch.log(q) + (1 - c[b]) * torch.log(1 - q))
        expected.append(0.1 * fp + fn + bce)
    torch.testing.assert_close(loss, torch.stack(expected).mean())
    loss.backward()
    assert pred.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="expected"):
        InstanceLoss()(pred, label[:, :2])


@pytest.mark.parametrize("completeness_weight", [1.0, 0.25])
def test_loss_sum_reduction_is_the_papers_sums(completeness_weight):
    g = torch.Generator().manual_seed(1)
    pred = torch.randn(2, 2, 4, 4, 4, generator=g)
    t = (torch.rand(2, 4, 4, 4, generator=g) > 0.5).float()
    w = 1 + torch.rand(2, 4, 4, 4, generator=g)
    label = torch.stack([t, w, torch.ones_like(t)], 1)
    p = torch.sigmoid(pred[:, 0])
    seg = 0.1 * (w * p * (1 - t)).sum((1, 2, 3)) + (w * (1 - p) * t).sum((1, 2, 3))
    bce = -torch.log(torch.sigmoid(pred[:, 1, 0, 0, 0]))
    loss = InstanceLoss(completeness_weight=completeness_weight, seg_reduction="sum")
    torch.testing.assert_close(loss(pred, label), (seg + completeness_weight * bce).mean())
    mean_seg, _ = InstanceLoss().terms(pred, label)
    torch.testing.assert_close(mean_seg, seg / w.sum((1, 2, 3)))
    with pytest.raises(ValueError, match="seg_reduction"):
        InstanceLoss(seg_reduction="max")
