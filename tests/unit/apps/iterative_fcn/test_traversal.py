"""The traversal: an oracle network recovers every vertebra; adversarial inputs and networks end within the bound,
with the reason logged."""

from __future__ import annotations

import logging

import pytest
import torch

from common.apps.iterative_fcn import END_REASONS, IterativeInferer, traverse
from common.metrics import instance_scores

PATCH = (16, 16, 16)


def spine_labels() -> torch.Tensor:
    """Four box 'vertebrae' down the last axis of a 20x20x48 volume; the top one (label 1) is cut by the edge."""
    lab = torch.zeros(20, 20, 48)
    for value, z in zip((1, 2, 3, 4), (44, 33, 21, 9)):
        lab[6:13, 7:14, z - 4 : z + 4] = value
    return lab[:, :, :48]


def oracle(x: torch.Tensor) -> torch.Tensor:
    """Segments the first label (ascending) visible in the patch outside the memory; complete unless it touches the
    patch border. The image channel carries the label map / 10."""
    labels, memory = torch.round(x[0, 0] * 10), x[0, 1] > 0.5
    free = labels[(labels > 0) & ~memory]
    seg = torch.full(x.shape[2:], -10.0)
    complete = -10.0
    if free.numel():
        mask = labels == free.min()
        seg[mask] = 10.0
        border = mask.clone()
        border[1:-1, 1:-1, 1:-1] = False
        complete = -10.0 if border.any() else 10.0
    return torch.stack([seg, torch.full_like(seg, complete)])[None]


def test_oracle_recovers_every_vertebra(caplog):
    lab = spine_labels()
    with caplog.at_level(logging.INFO, logger="common.apps.iterative_fcn.traversal"):
        t = traverse(oracle, lab / 10, PATCH, min_voxels=10, max_steps=500)
    assert t.reason == "no vertebra left" and "no vertebra left" in caplog.text
    rows, summary = instance_scores(t.labels.numpy(), lab.numpy())
    assert summary["identification_rate"] == 1.0 and summary["false_positives"] == 0
    assert all(r["dice"] == 1.0 for r in rows)
    assert [i["label"] for i in t.instances] == [1, 2, 3, 4]
    assert t.instances[0]["edge"]  # the cut vertebra is accepted because it touches the volume edge


def test_inferer_keeps_history_and_shape():
    lab = spine_labels()
    inferer = IterativeInferer(PATCH, min_voxels=10, max_steps=500)
    out = inferer((lab / 10)[None, None], oracle)
    assert out.shape == (1, 1, 20, 20, 48) and inferer.last.reason == "no vertebra left"
    assert len(inferer.history) == 1 and inferer.last.steps > 0


def count_calls(fn):
    calls = []

    def wrapped(x):
        calls.append(1)
        return fn(x)

    return wrapped, calls


def blob(x: torch.Tensor) -> torch.Tensor:
    """Always the same cube at the patch centre, always complete."""
    seg = torch.full(x.shape[2:], -10.0)
    seg[5:11, 5:11, 5:11] = 10.0
    return torch.stack([seg, torch.full_like(seg, 10.0)])[None]


def never_complete(x: torch.Tensor) -> torch.Tensor:
    out = oracle(x)
    out[:, 1] = -10.0
    return out


def everything(x: torch.Tensor) -> torch.Tensor:
    """Segments every bright voxel; complete."""
    seg = torch.where(x[0, 0] > 0.5, 10.0, -10.0)
    return torch.stack([seg, torch.full_like(seg, 10.0)])[None]


@pytest.mark.parametrize(
    "name, image, net, reasons",
    [
        ("empty volume", torch.zeros(20, 20, 48), everything, {"no vertebra left"}),
        ("all-bone volume", torch.ones(20, 20, 48), everything, {"no vertebra left"}),
        ("same blob everywhere", spine_labels() / 10, blob, {"no vertebra left"}),
        ("never complete", spine_labels() / 10, never_complete, {"no vertebra left"}),
        ("volume smaller than the patch", torch.ones(5, 30, 7), everything, {"no vertebra left"}),
    ],
)
def test_adversarial_inputs_end_within_the_bound(name, image, net, reasons, caplog):
    max_steps = 200
    wrapped, calls = count_calls(net)
    with caplog.at_level(logging.INFO, logger="common.apps.iterative_fcn.traversal"):
        t = traverse(wrapped, image, PATCH, min_voxels=10, max_steps=max_steps)
    assert t.reason in reasons, (name, t.reason, t.detail)
    assert len(calls) == t.steps <= max_steps
    assert f"traversal ended ({t.reason}: {t.detail}) after {t.steps} steps" in caplog.text
    assert t.labels.shape == image.shape


def test_never_complete_accepts_edge_vertebrae_and_those_returned_to():
    t = traverse(never_complete, spine_labels() / 10, PATCH, min_voxels=10, max_steps=500)
    assert not any(i["complete"] for i in t.instances)
    assert {i["accepted"] for i in t.instances} == {"edge", "returned to"}
    assert all(i["edge"] for i in t.instances if i["accepted"] == "edge")
    assert t.rejected  # the inner vertebrae are set aside first, written when the traversal comes back


def test_step_bound_ends_a_traversal(caplog):
    t = traverse(oracle, spine_labels() / 10, PATCH, min_voxels=10, max_steps=3)
    assert t.reason == "step bound" and t.steps == 3


def oscillate(x: torch.Tensor) -> torch.Tensor:
    """A blob in one corner when the patch image is dark there, else in the opposite corner: the patch moves back and
    forth between two positions (a cycle)."""
    seg = torch.full(x.shape[2:], -10.0)
    if x[0, 0, 0, 0, 0] > 0.5:
        seg[-4:, -4:, -4:] = 10.0
    else:
        seg[:4, :4, :4] = 10.0
    return torch.stack([seg, torch.full_like(seg, -10.0)])[None]


def test_a_local_cycle_is_left_and_the_slide_goes_on():
    image = torch.zeros(40, 40, 40)
    image[:20, :20, :20] = 1.0
    t = traverse(oscillate, image, PATCH, min_voxels=10, max_steps=500)
    assert t.reason == "no vertebra left" and t.cycles and t.steps < 500


def test_end_reasons_are_listed():
    assert set(END_REASONS) == {"no vertebra left", "step bound"}
    with pytest.raises(ValueError, match="max_steps"):
        traverse(oracle, torch.zeros(8, 8, 8), PATCH, max_steps=0)


def long_spine_labels() -> torch.Tensor:
    """Eight box 'vertebrae' (labels 1-8 from the top) down the last axis of a 20x20x96 volume."""
    lab = torch.zeros(20, 20, 96)
    for value in range(1, 9):
        z = 90 - 12 * (value - 1)
        lab[6:13, 7:14, z - 4 : z + 4] = value
    return lab


def misjudging_oracle(x: torch.Tensor, wrong: int = 5) -> torch.Tensor:
    """:func:`oracle`, except that vertebra ``wrong`` is always judged incomplete."""
    out = oracle(x)
    seg = out[0, 0] > 0
    if seg.any() and int(torch.round(x[0, 0][seg][0] * 10)) == wrong:
        out[:, 1] = -10.0
    return out


def test_one_misjudged_vertebra_is_written_flagged_and_the_traversal_goes_on(caplog):
    lab = long_spine_labels()
    with caplog.at_level(logging.INFO, logger="common.apps.iterative_fcn.traversal"):
        t = traverse(misjudging_oracle, lab / 10, PATCH, min_voxels=10, max_steps=1000)
    rows, summary = instance_scores(t.labels.numpy(), lab.numpy())
    assert summary["ground_truth"] == 8 and summary["identification_rate"] == 1.0, (t.reason, t.detail, t.steps)
    assert summary["false_positives"] == 0 and all(r["dice"] == 1.0 for r in rows)
    assert t.reason == "no vertebra left"
    flagged = [i for i in t.instances if not i["complete"]]
    assert len(flagged) == 1 and flagged[0]["accepted"] == "returned to"
    assert int(lab[t.labels == flagged[0]["label"]].unique().item()) == 5
    assert all(i["accepted"] == "complete" for i in t.instances if i is not flagged[0])
    assert "1 incomplete" in caplog.text
