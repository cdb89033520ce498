"""common.apps.igs.search: the greedy search finds the informative lines, writes every budget's pattern under its
forward model's name, breaks mirror ties deterministically, resumes only what it made, keeps its picks under mixed
precision, and its lookahead, subset and multi-line options do what they say."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from common.apps.igs import (
    IterativeGradientSampling,
    autocast_settings,
    cache_line_spectra,
    igs_loss,
    mask_gradient,
    mask_loss,
    rank_lines,
    search,
    weights_digest,
)
from common.transforms import line_mask, load_line_pattern, save_line_pattern

WIDTH, FREQS = 32, (5, 9)  # the label lives in two cosine gratings along W
C = WIDTH // 2  # the k-space centre line
INFORMATIVE = {C + s * f for f in FREQS for s in (-1, 1)}


class Threshold(nn.Module):
    """A fixed "network" on z-scored input: foreground logit = gain * x, background = -that (gain a parameter, so
    that the weights digest sees it)."""

    def __init__(self, gain: float = 8.0) -> None:
        super().__init__()
        self.gain = nn.Parameter(torch.tensor([gain]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fg = self.gain * x
        return torch.cat([-fg, fg], dim=1)


class ConvThreshold(nn.Module):
    """Threshold as a 1x1 convolution, an op that autocast runs in bfloat16 / float16."""

    def __init__(self, gain: float = 8.0) -> None:
        super().__init__()
        self.head = nn.Conv2d(1, 2, 1, bias=False)
        with torch.no_grad():
            self.head.weight.copy_(torch.tensor([-gain, gain]).view(2, 1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(x)


def grating_data(n: int = 6, mirror: bool = False) -> list[dict]:
    """``n`` slices ``(1, 8, WIDTH)`` of two cosine gratings with random phases; label = image above its mean.
    ``mirror``: every image reversed about column 0 (``x[-n]``), which mirrors its k-space (line ``+f`` <-> ``-f``)."""
    rng = np.random.default_rng(0)
    cols = np.arange(WIDTH)
    items = []
    for i in range(n):
        phase = rng.uniform(0, 2 * np.pi, size=2)
        wave = sum(0.4 * np.cos(2 * np.pi * f * cols / WIDTH + p) for f, p in zip(FREQS, phase))
        image = np.broadcast_to(1.0 + wave, (1, 8, WIDTH)).astype(np.float32)
        if mirror:
            image = np.roll(image[..., ::-1], 1, axis=-1)
        meta = {"patient": f"patient{i:03d}", "phase": "ED", "slice": 0}
        items.append({"image": image.copy(), "label": (image > 1.0).astype(np.float32), **meta})
    return items


def sidecar(path) -> dict:
    return json.loads(path.with_suffix(".json").read_text())


def test_search_picks_the_informative_lines_and_writes_all_budgets(tmp_path):
    igs = IterativeGradientSampling(Threshold(), grating_data(), tmp_path, accelerations=(16, 8, 4), batch_size=4)
    written = igs.run()
    assert sorted(written) == [4.0, 8.0, 16.0]
    order = json.loads((tmp_path / "igs_magnitude_x4.json").read_text())["order"]
    assert order[0] == C  # starts from the centre line
    assert set(order[1:5]) == INFORMATIVE  # the four grating lines come first
    state = json.loads((tmp_path / "igs_magnitude_state.json").read_text())
    for acc, n in ((16, 2), (8, 4), (4, 8)):
        assert written[acc] == tmp_path / f"igs_magnitude_x{acc}.npy"
        mask = load_line_pattern(written[acc], width=WIDTH)
        assert int(mask.sum()) == n
        meta = sidecar(written[acc])
        assert meta["lines"] == sorted(meta["order"]) and meta["order"] == order[:n] and meta["acceleration"] == acc
        assert meta["forward_model"] == "magnitude" and meta["loss"] == "dice_pooled"
        assert meta["fingerprint"] == state["fingerprint"] and meta["fingerprint"]["forward_model"] == "magnitude"
        assert meta["search_seconds"] > 0
    assert sidecar(written[16])["search_seconds"] <= sidecar(written[4])["search_seconds"]
    assert (tmp_path / "igs_magnitude_search.png").stat().st_size > 0
    assert not (tmp_path / "igs_magnitude_channels.png").exists()  # one pattern for all channels: no channel figure


def test_added_line_has_the_most_negative_gradient():
    batches = cache_line_spectra(grating_data(), batch_size=3)
    mask = torch.zeros(WIDTH)
    mask[C] = 1
    grad, loss = mask_gradient(Threshold(), batches, mask, igs_loss("dice"))
    assert grad.shape == (WIDTH,) and loss > 0
    grad[C] = float("inf")
    assert int(grad.argmin()) in INFORMATIVE


def test_both_forward_models_live_side_by_side(tmp_path):
    data = grating_data()
    mag = IterativeGradientSampling(Threshold(), data, tmp_path, accelerations=(8,), forward_model="magnitude").run()
    pha = IterativeGradientSampling(Threshold(), data, tmp_path, accelerations=(8,), forward_model="phase").run()
    assert mag[8.0].name == "igs_magnitude_x8.npy" and pha[8.0].name == "igs_phase_x8.npy"
    for model in ("magnitude", "phase"):
        assert (tmp_path / f"igs_{model}_state.json").is_file() and (tmp_path / f"igs_{model}_search.png").is_file()
    fp_mag, fp_pha = sidecar(mag[8.0])["fingerprint"], sidecar(pha[8.0])["fingerprint"]
    assert fp_pha["forward_model"] == "phase" and fp_pha["phase_map"] == {"seed_base": 0, "max_phase": np.pi}
    assert fp_mag["phase_map"] is None and fp_mag["weights"] == fp_pha["weights"]


def _dice_pooled_reference(logits: torch.Tensor, label: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """The original's loss written out: softmax, one-hot, sums over dims (0, 2, 3), eps in the denominator only."""
    prob = logits.softmax(1)
    onehot = torch.stack([(label[:, 0] == k).float() for k in range(logits.shape[1])], dim=1)
    inter = (prob * onehot).sum((0, 2, 3))
    card = (prob + onehot).sum((0, 2, 3))
    return 1 - (2 * inter / (card + eps)).mean()


def test_dice_pooled_is_the_originals_batch_pooled_dice_and_dice_is_per_slice():
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(5, 4, 9, 11, generator=gen, dtype=torch.float64)
    label = torch.randint(0, 4, (5, 1, 9, 11), generator=gen).double()
    label[2] = 0  # a slice with background only: pooled and per-slice Dice differ most there
    pooled = igs_loss("dice_pooled")(logits, label)
    torch.testing.assert_close(pooled, _dice_pooled_reference(logits, label), rtol=1e-12, atol=1e-12)
    per_slice = torch.stack([_dice_pooled_reference(logits[i : i + 1], label[i : i + 1], 0.0) for i in range(5)])
    # MONAI's per-slice "dice" smooths numerator and denominator by 1e-5: equal to the unsmoothed form to ~1e-6
    torch.testing.assert_close(igs_loss("dice")(logits, label), per_slice.mean(), rtol=0, atol=1e-5)
    assert abs(float(pooled) - float(per_slice.mean())) > 1e-2


def test_loss_batch_keeps_a_pooled_loss_independent_of_the_batch_size():
    loss_fn, mask = igs_loss("dice_pooled"), torch.zeros(WIDTH)
    mask[[C, C + 5]] = 1
    small = mask_gradient(Threshold(), cache_line_spectra(grating_data(), batch_size=2), mask, loss_fn)
    big = mask_gradient(Threshold(), cache_line_spectra(grating_data(), batch_size=6), mask, loss_fn, loss_batch=2)
    torch.testing.assert_close(big[0], small[0], rtol=1e-5, atol=1e-6)
    assert big[1] == pytest.approx(small[1], rel=1e-6)


@pytest.mark.parametrize("lower", [C + 3, C - 3])
def test_mirror_tie_goes_to_the_smaller_frequency_then_the_plus_side_whichever_rounds_lower(lower):
    scores = torch.zeros(WIDTH)
    scores[[C + 3, C - 3]] = -1.0
    scores[lower] = -1.0 - 6e-8  # one side of the mirror pair rounds lower
    scores[[C + 2, C - 2]] = -0.5
    assert rank_lines(scores, [C], 4) == [C + 3, C - 3, C + 2, C - 2]
    scores[C + 1] = -1.0 + 5e-5  # within 1e-4 of the best: a tie, and the smaller |f| wins
    assert rank_lines(scores, [C], 2) == [C + 1, C + 3]
    assert rank_lines(scores, [C], 2, rtol=0.0) == [lower, C - 3 if lower == C + 3 else C + 3]
    assert rank_lines(scores, [C, C + 3, C - 3, C + 1], 1) == [C + 2]


@pytest.mark.parametrize("side", [1, -1])
def test_search_pick_does_not_depend_on_which_mirror_line_rounds_lower(tmp_path, monkeypatch, side):
    """Under the magnitude model line +f and -f have equal gradients but for rounding: nudge one side of every pair
    lower by 1e-7 relative (the size of fp32 rounding) and the search must pick the same lines either way."""
    exact = search.mask_gradient

    def rounded(*args, **kwargs):
        grad, loss = exact(*args, **kwargs)
        grad = grad.double()
        for f in range(1, C):
            grad[C - side * f] -= 1e-7 * abs(float(grad[C - side * f]))
        return grad, loss

    monkeypatch.setattr(search, "mask_gradient", rounded)
    kwargs = {"accelerations": (6.2,), "forward_model": "magnitude", "batch_size": 4}  # 32 // 6.2 = 5 lines
    order = sidecar(IterativeGradientSampling(Threshold(), grating_data(), tmp_path, **kwargs).run()[6.2])["order"]
    assert order[:2] == [C, C + 9]  # the first pick is a mirror tie: the +f side, wherever the rounding went
    assert set(order[1:]) == INFORMATIVE
    naive = IterativeGradientSampling(Threshold(), grating_data(), tmp_path / "naive", tie_rtol=0.0, **kwargs).run()
    assert sidecar(naive[6.2])["order"][1] == C - side * 9  # without the tolerance rounding decides


def test_resume_refuses_other_weights_or_loss_and_resumes_the_same(tmp_path):
    data = grating_data()
    full = IterativeGradientSampling(Threshold(), data, tmp_path / "a", accelerations=(4,)).run()
    part = IterativeGradientSampling(Threshold(), data, tmp_path / "b", accelerations=(8,)).run()
    state_file = tmp_path / "b" / "igs_magnitude_state.json"
    state = json.loads(state_file.read_text())
    assert len(state["orders"][0]) == 4 and state["width"] == WIDTH
    assert sidecar(part[8.0])["fingerprint"] == state["fingerprint"]
    assert set(state["fingerprint"]) >= {"weights", "data", "loss", "forward_model", "start", "lines_per_iteration"}
    assert set(state["fingerprint"]) >= {"lookahead", "subset"}
    retrained = Threshold()
    with torch.no_grad():
        retrained.gain += 1e-3  # one weight changed, as a retraining would
    with pytest.raises(ValueError, match=r"igs_magnitude_state\.json: made with other settings \(weights: expected"):
        IterativeGradientSampling(retrained, data, tmp_path / "b", accelerations=(8, 4)).run()
    with pytest.raises(
        ValueError, match=r"igs_magnitude_state\.json: made with other settings \(loss: expected 'dice'"
    ):
        IterativeGradientSampling(Threshold(), data, tmp_path / "b", accelerations=(8, 4), loss="dice").run()
    with pytest.raises(ValueError, match=r"state\.json: made with other settings \(data: expected"):
        IterativeGradientSampling(Threshold(), data[:-1], tmp_path / "b", accelerations=(8, 4)).run()
    assert json.loads(state_file.read_text()) == state  # refused runs leave the state alone
    resumed = IterativeGradientSampling(Threshold(), data, tmp_path / "b", accelerations=(8, 4)).run()
    assert torch.equal(load_line_pattern(resumed[4.0]), load_line_pattern(full[4.0]))
    assert sidecar(resumed[4.0])["order"] == sidecar(full[4.0])["order"]
    assert sidecar(resumed[4.0])["search_seconds"] >= sidecar(part[8.0])["search_seconds"]


def test_a_state_without_fingerprint_is_refused(tmp_path):
    state_file = tmp_path / "igs_magnitude_state.json"
    state_file.write_text(json.dumps({"width": WIDTH, "orders": [[C, C + 5]], "history": [[1, 0.5]]}))
    with pytest.raises(ValueError, match=r"igs_magnitude_state\.json: expected a fingerprint .* found none"):
        IterativeGradientSampling(Threshold(), grating_data(), tmp_path, accelerations=(4,)).run()


def test_autocast_settings():
    assert autocast_settings("cpu", False) == (None, 1.0)
    assert autocast_settings("cpu", True) == (torch.bfloat16, 1.0)
    assert autocast_settings("cpu", "fp16") == (torch.float16, 1024.0)
    with pytest.raises(ValueError, match="amp: expected True, False, 'bf16' or 'fp16', found 'fp8'"):
        autocast_settings("cpu", "fp8")


@pytest.mark.parametrize("amp", [True, "fp16"])
def test_mixed_precision_picks_the_same_lines_as_float32(tmp_path, amp):
    batches = cache_line_spectra(grating_data(), batch_size=3)
    mask = torch.zeros(WIDTH)
    mask[[C, C + 9]] = 1
    g32, l32 = mask_gradient(ConvThreshold(), batches, mask, igs_loss("dice_pooled"))
    g16, l16 = mask_gradient(ConvThreshold(), batches, mask, igs_loss("dice_pooled"), amp=amp)
    assert not torch.equal(g16, g32)  # the network really ran in reduced precision
    torch.testing.assert_close(g16, g32, rtol=0.05, atol=0.05 * float(g32.abs().max()))
    assert l16 == pytest.approx(l32, abs=1e-2)
    kwargs = {"accelerations": (6.2,), "batch_size": 3}  # 32 // 6.2 = 5 lines: the centre and the four grating lines
    fp32 = IterativeGradientSampling(ConvThreshold(), grating_data(), tmp_path / "fp32", **kwargs).run()
    mixed = IterativeGradientSampling(ConvThreshold(), grating_data(), tmp_path / "amp", amp=amp, **kwargs).run()
    order = sidecar(fp32[6.2])["order"]
    assert set(order[1:]) == INFORMATIVE and sidecar(mixed[6.2])["order"] == order


def _amplitude(x: torch.Tensor, freq: int) -> torch.Tensor:
    """Amplitude of ``cos(2 pi freq n / WIDTH)`` along W in ``x`` ``(B, 1, H, W)``, one value per slice."""
    wave = torch.cos(2 * torch.pi * freq * torch.arange(WIDTH) / WIDTH)
    return 2 * ((x - x.mean(dim=(-2, -1), keepdim=True)) * wave).mean(dim=(-3, -2, -1))


def lookahead_case() -> tuple[list[dict], nn.Module, object]:
    """One image ``1 + 0.4 cos(f_a) + 0.4 cos(f_b)``, the identity as network and the loss ``-2 a + 20 a^2 - b`` of
    the amplitudes ``a``, ``b`` at ``f_a = 3``, ``f_b = 7``. Adding one line of ``f_a`` to the centre line brings ``a``
    to about 0.2: its gradient (-0.4) is the steeper, but its loss rises to +0.39; a line of ``f_b`` has gradient -0.2
    and lowers the loss to -0.2."""
    cols = np.arange(WIDTH)
    image = 1 + 0.4 * np.cos(2 * np.pi * 3 * cols / WIDTH) + 0.4 * np.cos(2 * np.pi * 7 * cols / WIDTH)
    data = [{"image": np.broadcast_to(image, (1, 4, WIDTH)).astype(np.float32).copy(), "label": np.zeros((1, 4, 32))}]

    def loss_fn(x: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        a, b = _amplitude(x, 3), _amplitude(x, 7)
        return (-2 * a + 20 * a**2 - b).mean()

    return data, nn.Identity(), loss_fn


def test_lookahead_adds_the_candidate_with_the_lower_actual_loss(tmp_path):
    data, net, loss_fn = lookahead_case()
    batches = cache_line_spectra(data)
    mask = torch.zeros(WIDTH)
    mask[C] = 1
    grad = mask_gradient(net, batches, mask, loss_fn, normalize=None)[0]
    after = {}
    for line in (C + 3, C + 7):
        trial = mask.clone()
        trial[line] = 1
        after[line] = mask_loss(net, batches, trial, loss_fn, normalize=None)
    assert grad[C + 3] < grad[C + 7] < 0 and after[C + 7] < 0 < after[C + 3]  # the gradient ranks them wrongly
    kwargs = {"accelerations": (WIDTH / 2,), "loss": loss_fn, "normalize": None}
    greedy = IterativeGradientSampling(net, data, tmp_path / "greedy", **kwargs).run()
    ahead = IterativeGradientSampling(net, data, tmp_path / "ahead", lookahead=4, **kwargs).run()
    assert sidecar(greedy[16.0])["order"] == [C, C + 3]
    assert sidecar(ahead[16.0])["order"] == [C, C + 7]  # a mirror tie in loss too: the +f side
    assert sidecar(ahead[16.0])["fingerprint"]["lookahead"] == 4


def test_start_blocks(tmp_path):
    data = grating_data()
    one = IterativeGradientSampling(Threshold(), data, tmp_path, accelerations=(8, 4), start="one_sided").run()
    assert sidecar(one[8.0])["order"] == list(range(C, C + 4))  # the one-sided block of the x8 budget
    assert sidecar(one[8.0])["fingerprint"]["start"] == "one_sided" and sidecar(one[8.0])["source"] == "search"
    block = IterativeGradientSampling(
        Threshold(), data, tmp_path / "b", accelerations=(8, 4), start="center_block"
    ).run()
    assert sorted(sidecar(block[8.0])["order"]) == list(range(C - 2, C + 2))


def test_subset_and_several_lines_per_step_after_the_exact_ones(tmp_path):
    seen = []

    def counting_loss(logits: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        seen.append(len(logits))
        return igs_loss("dice_pooled")(logits, label)

    kwargs = {
        "accelerations": (4,),
        "loss": counting_loss,
        "subset_fraction": 0.5,
        "lines_per_iteration": 2,
        "exact_lines": 3,
        "batch_size": 2,
    }
    written = IterativeGradientSampling(Threshold(), grating_data(), tmp_path / "a", **kwargs).run()
    state = json.loads((tmp_path / "a" / "igs_magnitude_state.json").read_text())
    # one line per step up to 3 lines, then 2, never past the budget of 8; the final loss is over all slices
    assert [n for n, _ in state["history"]] == [1, 2, 3, 5, 7, 8]
    assert seen == [2, 1] * 5 + [2, 2, 2]  # 3 of the 6 slices per step (batches of 2), all 6 at the end
    assert state["fingerprint"]["subset"] == {"fraction": 0.5, "seed": 0}
    again = IterativeGradientSampling(Threshold(), grating_data(), tmp_path / "b", **kwargs).run()
    assert sidecar(again[4.0])["order"] == sidecar(written[4.0])["order"]  # seeded: the same subsets
    assert set(sidecar(written[4.0])["order"][1:5]) == INFORMATIVE


def test_per_channel_patterns_and_lines_per_iteration(tmp_path):
    data = [
        {"image": np.concatenate([d["image"], d["image"][:, :, ::-1]]), "label": d["label"]} for d in grating_data()
    ]

    class TwoChannel(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return Threshold()(x[:, :1])

    written = IterativeGradientSampling(
        TwoChannel(),
        data,
        tmp_path,
        accelerations=(4,),
        per_channel=True,
        channel_names=("a", "b"),
        lines_per_iteration=3,
    ).run()
    mask = load_line_pattern(written[4.0])
    assert mask.shape == (2, WIDTH) and mask.sum(1).tolist() == [8.0, 8.0]
    assert (tmp_path / "igs_magnitude_channels.png").stat().st_size > 1000  # both channels' patterns drawn


def test_bad_arguments(tmp_path):
    data = grating_data()
    with pytest.raises(ValueError, match="expected at least one slice"):
        IterativeGradientSampling(Threshold(), [], tmp_path)
    with pytest.raises(ValueError, match="lines_per_iteration: expected >= 1"):
        IterativeGradientSampling(Threshold(), data, tmp_path, lines_per_iteration=0)
    with pytest.raises(ValueError, match="expected at least one line"):
        IterativeGradientSampling(Threshold(), data, tmp_path, accelerations=(64,))
    with pytest.raises(
        ValueError, match="loss: expected one of dice, dice_pooled, dice_ce, ce, l1, ssim, ssim_l1, found .l2."
    ):
        igs_loss("l2")
    with pytest.raises(ValueError, match="forward_model: expected one of magnitude, phase, found 'complex'"):
        IterativeGradientSampling(Threshold(), data, tmp_path, forward_model="complex")
    with pytest.raises(ValueError, match="start: expected one of center, center_block, one_sided"):
        IterativeGradientSampling(Threshold(), data, tmp_path, start="edge")
    with pytest.raises(ValueError, match=r"subset_fraction: expected a fraction in \(0, 1\], found 0"):
        IterativeGradientSampling(Threshold(), data, tmp_path, subset_fraction=0)
    with pytest.raises(ValueError, match="lookahead: expected >= 0"):
        IterativeGradientSampling(Threshold(), data, tmp_path, lookahead=-1)
    with pytest.raises(ValueError, match="loss_batch: expected a divisor of batch_size 32, found 5"):
        IterativeGradientSampling(Threshold(), data, tmp_path, loss_batch=5)
    with pytest.raises(ValueError, match="amp: expected"):
        IterativeGradientSampling(Threshold(), data, tmp_path, amp="int8")


GUARDED = ("center", "one_sided", "equispaced", "random")


def guard_losses(net, data, loss_fn, acc, seeds=(0, 1, 2)) -> dict[str, float]:
    """Every guard's loss at ``acc``, computed here from the baseline masks (independently of the search)."""
    batches = cache_line_spectra(data)
    masks = {k: line_mask(k, WIDTH, acc) for k in ("center", "one_sided")}
    cf = {16: 0.04, 8: 0.04, 4: 0.08}[acc]
    masks |= {f"{k}_seed{s}": line_mask(k, WIDTH, acc, cf, seed=s) for k in ("equispaced", "random") for s in seeds}
    return {k: mask_loss(net, batches, m, loss_fn, normalize=None) for k, m in masks.items()}


@pytest.mark.parametrize("refine", ["none", "nested", "per_budget"])
def test_returned_pattern_never_loses_to_a_guard_on_the_search_loss(tmp_path, refine):
    data, net, loss_fn = lookahead_case()
    kwargs = {"accelerations": (16, 8), "loss": loss_fn, "normalize": None, "guard_seeds": (0, 1, 2)}
    plain = IterativeGradientSampling(net, data, tmp_path / "plain", **kwargs).run()
    guarded = IterativeGradientSampling(net, data, tmp_path / refine, guards=GUARDED, refine=refine, **kwargs).run()
    batches = cache_line_spectra(data)
    for acc in (16, 8):
        guards = guard_losses(net, data, loss_fn, acc)
        meta = sidecar(guarded[float(acc)])
        found = mask_loss(net, batches, load_line_pattern(guarded[float(acc)], width=WIDTH), loss_fn, normalize=None)
        assert meta["search_loss"] == pytest.approx(found, abs=1e-6)  # the sidecar's loss is the pattern's
        assert found <= min(guards.values()) + 1e-6, (acc, found, guards)
        assert meta["guard_losses"] == pytest.approx(guards, abs=1e-6)
    # at the first budget the plain growth is one of the candidates, so the kept pattern is never worse than it
    assert sidecar(guarded[16.0])["search_loss"] <= sidecar(plain[16.0])["search_loss"] + 1e-6
    # the plain greedy step loses to the centre block at x16 (+0.39 against about 0): the case the guard is for
    assert sidecar(plain[16.0])["search_loss"] > min(guard_losses(net, data, loss_fn, 16).values()) + 0.3


def test_swaps_lower_the_loss_and_nested_keeps_the_earlier_lines(tmp_path):
    data, net, loss_fn = lookahead_case()
    kwargs = {"accelerations": (16, 8), "loss": loss_fn, "normalize": None}
    nested = IterativeGradientSampling(net, data, tmp_path / "n", refine="nested", **kwargs).run()
    x16, x8 = sidecar(nested[16.0]), sidecar(nested[8.0])
    assert x16["source"] == "search" and x16["swaps"] >= 1 and x16["search_loss"] < -0.15  # C + 3 swapped for f = 7
    assert set(x16["lines"]) <= set(x8["lines"]) and x8["nested"] and x8["order"][:2] == x16["order"]
    assert x16["fingerprint"]["refine"] == {"mode": "nested", "swap_candidates": 8, "max_swaps": 32}
    free = IterativeGradientSampling(net, data, tmp_path / "p", refine="per_budget", **kwargs).run()
    assert sidecar(free[8.0])["search_loss"] <= x8["search_loss"] + 1e-6  # more freedom, never a higher loss


def test_loupe_pattern_of_this_network_is_a_guard_and_others_are_not(tmp_path):
    data, net, loss_fn = lookahead_case()
    best = torch.zeros(WIDTH)
    best[[C + 7, C - 7]] = 1  # both lines of f = 7: lower than anything the greedy step reaches at x16
    kwargs = {"accelerations": (16,), "loss": loss_fn, "normalize": None, "guards": ("loupe",)}
    stale = {"weights": "0" * 16, "forward_model": "magnitude"}
    save_line_pattern(tmp_path / "a" / "loupe_magnitude_x16", best, fingerprint=stale)
    other = IterativeGradientSampling(net, data, tmp_path / "a", **kwargs).run()
    assert sidecar(other[16.0])["guard_losses"] == {} and sidecar(other[16.0])["source"] == "search"
    made = {"weights": weights_digest(net), "forward_model": "magnitude"}
    save_line_pattern(tmp_path / "b" / "loupe_magnitude_x16", best, fingerprint=made)
    used = IterativeGradientSampling(net, data, tmp_path / "b", **kwargs).run()
    assert sidecar(used[16.0])["source"] == "guard:loupe" and sorted(sidecar(used[16.0])["lines"]) == [C - 7, C + 7]
    assert set(sidecar(used[16.0])["guard_losses"]) == {"loupe"}
    assert sidecar(used[16.0])["fingerprint"]["guards"]["names"] == ["loupe"]


def test_guard_and_refine_arguments_are_checked(tmp_path):
    data = grating_data()
    with pytest.raises(ValueError, match="guards: expected distinct names from center, one_sided, equispaced"):
        IterativeGradientSampling(Threshold(), data, tmp_path, guards=("pilot",))
    with pytest.raises(ValueError, match="refine: expected one of none, nested, per_budget, found 'greedy'"):
        IterativeGradientSampling(Threshold(), data, tmp_path, refine="greedy")
    with pytest.raises(ValueError, match="swap_candidates, max_swaps: expected >= 1 and >= 0, found 0 and 3"):
        IterativeGradientSampling(Threshold(), data, tmp_path, swap_candidates=0, max_swaps=3)
    with pytest.raises(ValueError, match=r"center_fractions: expected an entry for accelerations \[6.0\]"):
        IterativeGradientSampling(Threshold(), data, tmp_path, accelerations=(6,), guards=("random",))
