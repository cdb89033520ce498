"""common.apps.igs.loupe: LOUPE's renormalisation, its top-k pattern, the informative lines on a toy problem,
seeding, reruns that skip matching files and refuse others, resuming from a per-epoch state (after a crash or a time
limit) to the same pattern, and the loss figure."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from common.apps.igs import LOUPE, cache_line_spectra, igs_loss, mask_gradient, plot_loupe_loss
from common.apps.igs.loupe import LOSS, relaxed_line_mask, renormalize_probability, top_lines, triangle_logits
from common.transforms import load_line_pattern
from tests.unit.apps.igs.test_search import FREQS, WIDTH, grating_data

CENTRE = WIDTH // 2
PNG = b"\x89PNG\r\n\x1a\n"


class ConvThreshold(nn.Module):
    """A frozen "network" with weights: a 1x1 conv giving background = -8 x, foreground = 8 x (x z-scored)."""

    def __init__(self, gain: float = 8.0) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 1)
        with torch.no_grad():
            self.conv.weight.copy_(torch.tensor([-gain, gain]).reshape(2, 1, 1, 1))
            self.conv.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


def reference_renormalize(p: np.ndarray, alpha: float) -> np.ndarray:
    """The LOUPE paper's rescaling, one branch at a time."""
    m = p.mean()
    if m >= alpha:
        return p * alpha / m
    return 1 - (1 - p) * (1 - alpha) / (1 - m)


def sidecar(path: Path) -> dict:
    return json.loads(Path(path).with_suffix(".json").read_text())


@pytest.mark.parametrize("alpha", [1 / 4, 1 / 8, 1 / 16])
@pytest.mark.parametrize("low,high", [(0.5, 1.0), (0.0, 0.05)])  # mean above alpha: scale p; below: scale 1 - p
def test_renormalised_probabilities_have_mean_alpha_in_both_branches(alpha, low, high):
    rng = np.random.default_rng(0)
    p = rng.uniform(low, high, size=(3, 33))
    out = renormalize_probability(torch.from_numpy(p), alpha).numpy()
    for row_in, row_out in zip(p, out):  # each row on its own
        np.testing.assert_allclose(row_out, reference_renormalize(row_in, alpha), rtol=0, atol=1e-12)
        assert row_out.mean() == pytest.approx(alpha, abs=1e-12)
    assert out.min() >= 0.0 and out.max() <= 1.0
    assert ((out > p) == (low < alpha)).all()  # the up branch raises every probability, the down branch lowers all


def test_renormalisation_gradient_is_finite_when_probabilities_saturate():
    theta = torch.full((32,), 30.0, requires_grad=True)  # sigmoid(150) == 1 in float32: 1 - mean(p) == 0
    mask = relaxed_line_mask(theta, 1 / 8, torch.full((32,), 0.5))
    mask.sum().backward()
    assert torch.isfinite(mask).all() and torch.isfinite(theta.grad).all()
    with pytest.raises(ValueError, match=r"alpha: expected a sparsity in \(0, 1\], found 0"):
        renormalize_probability(torch.rand(8), 0.0)


@pytest.mark.parametrize("width", [32, 33])
def test_triangle_logits_are_zero_at_the_edges_and_one_at_the_centre_only(width):
    theta = triangle_logits(width)
    assert theta.shape == (width,) and theta[0] == 0 and theta[-1] == 0
    assert theta[width // 2] == 1 and (theta == 1).sum() == 1
    assert (torch.diff(theta[: width // 2 + 1]) > 0).all() and (torch.diff(theta[width // 2 :]) < 0).all()


def test_top_lines_keeps_exactly_n_and_breaks_ties_towards_the_centre():
    mask, orders = top_lines(torch.zeros(WIDTH), 5)
    assert orders == [[CENTRE, CENTRE - 1, CENTRE + 1, CENTRE - 2, CENTRE + 2]] and int(mask.sum()) == 5
    theta = torch.arange(WIDTH, dtype=torch.float32).repeat(2, 1)
    theta[1] = theta[1].flip(0)
    mask, orders = top_lines(theta, 3)
    assert mask.shape == (2, WIDTH) and mask.sum(1).tolist() == [3.0, 3.0]
    assert orders == [[31, 30, 29], [0, 1, 2]]


def test_patterns_have_exactly_the_budget_and_a_complete_sidecar(tmp_path):
    loupe = LOUPE(ConvThreshold(), grating_data(4), tmp_path, accelerations=(3, 8, 4), epochs=2, batch_size=3)
    written = loupe.run()
    assert sorted(written) == [3.0, 4.0, 8.0]
    for acc, n in ((3.0, 10), (4.0, 8), (8.0, 4)):
        assert written[acc] == tmp_path / f"loupe_magnitude_x{acc:g}.npy"
        mask = load_line_pattern(written[acc], width=WIDTH)
        meta = sidecar(written[acc])
        assert int(mask.sum()) == n == meta["num_lines"] and meta["lines"] == sorted(meta["order"])
        assert meta["method"] == "LOUPE" and meta["acceleration"] == acc and meta["epochs"] == 2
        assert meta["forward_model"] == "magnitude" and len(meta["loss_history"]) == 2 and len(meta["theta"]) == WIDTH
        assert 0 <= meta["search_loss"] <= 1 and 0 <= meta["train_loss"] <= 1 and meta["search_seconds"] >= 0
        fp = meta["fingerprint"]
        assert fp["method"] == "loupe" and fp["forward_model"] == "magnitude" and fp["epochs"] == 2
        assert {"weights", "data", "lr", "seed", "batch_size"} <= set(fp)
        assert top_lines(torch.tensor(meta["theta"]), n)[1][0] == meta["order"]  # the pattern is theta's top n
        assert not loupe.state_path(acc).exists()  # deleted once the pattern is written
    assert not any(p.requires_grad for p in loupe.network.parameters())
    assert (tmp_path / "loupe_magnitude_loss.png").read_bytes()[:8] == PNG


@pytest.mark.parametrize("seed,amp", [(0, False), (1, False), (0, True), (0, "fp16")])
def test_learns_the_lines_that_carry_the_label(tmp_path, seed, amp):
    """The label lives in the centre line and two cosine gratings (|f| = 5, 9); in a magnitude image line +f and -f
    carry the same information, so 4 lines must cover |f| = 0, 5, 9. The triangle start ranks them 1st, 10th, 18th."""
    data = grating_data(8)
    loupe = LOUPE(
        ConvThreshold(), data, tmp_path, accelerations=(8,), epochs=100, lr=0.05, batch_size=2, seed=seed, amp=amp
    )
    meta = sidecar(loupe.run()[8.0])  # amp: bfloat16 (True on the CPU) or scaled float16 network pass, the same |f|
    covered = {abs(i - CENTRE) for i in meta["lines"]}
    assert {0, *FREQS} <= covered, meta["order"]
    start = top_lines(triangle_logits(WIDTH), 4)[0]
    assert {abs(i - CENTRE) for i in start.nonzero().flatten().tolist()} == {0, 1, 2}  # not already there
    start_loss = mask_gradient(ConvThreshold(), cache_line_spectra(data, batch_size=2), start, igs_loss(LOSS))[1]
    assert meta["search_loss"] < 0.2 < 0.4 < start_loss, (meta["search_loss"], start_loss)


def test_equal_seeds_give_equal_patterns_and_the_global_rng_is_untouched(tmp_path):
    data = grating_data(4)
    searches = {
        name: LOUPE(ConvThreshold(), data, tmp_path / name, accelerations=accs, epochs=3, batch_size=3, seed=seed)
        for name, accs, seed in (("a", (8,), 0), ("b", (4, 8), 0), ("c", (8,), 1))
    }  # nn.Conv2d draws its initial weights from the global RNG: built before the state is taken
    torch.manual_seed(123)
    before = torch.get_rng_state()
    runs = {name: search.run() for name, search in searches.items()}
    assert torch.equal(torch.get_rng_state(), before)
    theta = {name: sidecar(w[8.0])["theta"] for name, w in runs.items()}
    assert theta["a"] == theta["b"]  # seeded afresh per acceleration: x8 does not depend on x4 having run
    assert theta["a"] != theta["c"]
    assert np.array_equal(np.load(runs["a"][8.0]), np.load(runs["b"][8.0]))


def test_rerun_skips_a_matching_pattern_and_refuses_one_made_otherwise(tmp_path, monkeypatch, caplog):
    data = grating_data(4)
    first = LOUPE(ConvThreshold(), data, tmp_path, accelerations=(8,), epochs=2, batch_size=3).run()
    stamp = first[8.0].stat().st_mtime_ns

    def no_search(*args, **kwargs):
        raise AssertionError("searched again")

    with monkeypatch.context() as m:
        m.setattr(LOUPE, "_optimise", no_search)
        with caplog.at_level("INFO", logger="common.apps.igs.loupe"):
            again = LOUPE(ConvThreshold(), data, tmp_path, accelerations=(8,), epochs=2, batch_size=3).run()
    assert again == first and first[8.0].stat().st_mtime_ns == stamp
    assert "made with the same settings exists, skipped" in caplog.text

    with pytest.raises(ValueError, match=r"loupe_magnitude_x8\.json: made with other settings \(lr: expected 0\.1"):
        LOUPE(ConvThreshold(), data, tmp_path, accelerations=(8,), epochs=2, batch_size=3, lr=0.1).run()
    with pytest.raises(ValueError, match=r"made with other settings \(weights: expected"):
        LOUPE(ConvThreshold(gain=4.0), data, tmp_path, accelerations=(8,), epochs=2, batch_size=3).run()
    other = LOUPE(ConvThreshold(), data, tmp_path, accelerations=(8,), epochs=2, batch_size=3, forward_model="phase")
    assert other.run()[8.0] == tmp_path / "loupe_phase_x8.npy"  # the other forward model has its own file
    assert sidecar(tmp_path / "loupe_phase_x8.npy")["fingerprint"]["forward_model"] == "phase"

    meta = sidecar(first[8.0])
    del meta["fingerprint"]
    first[8.0].with_suffix(".json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match=r"expected a fingerprint of the settings it was made with .*found none"):
        LOUPE(ConvThreshold(), data, tmp_path, accelerations=(8,), epochs=2, batch_size=3).run()


class Crash(Exception):
    """Stands for a stopped process."""


def crash_in_epoch(monkeypatch: pytest.MonkeyPatch, epoch: int, batches_per_epoch: int) -> None:
    """Make LOUPE stop (raise :class:`Crash`) at the first batch of ``epoch`` (1-based), as a killed process would."""
    loss = LOUPE._loss
    calls = []

    def loss_or_crash(self, *args):
        calls.append(None)
        if len(calls) > (epoch - 1) * batches_per_epoch:
            raise Crash
        return loss(self, *args)

    monkeypatch.setattr(LOUPE, "_loss", loss_or_crash)


def same_result(a: Path, b: Path) -> None:
    """Two runs' patterns: the same theta, loss history and lines."""
    meta_a, meta_b = sidecar(a), sidecar(b)
    np.testing.assert_allclose(meta_a["theta"], meta_b["theta"], rtol=0, atol=1e-6)
    np.testing.assert_allclose(meta_a["loss_history"], meta_b["loss_history"], rtol=0, atol=1e-6)
    assert meta_a["order"] == meta_b["order"] and np.array_equal(np.load(a), np.load(b))


@pytest.mark.parametrize("checkpoint_every,crash_epoch,saved", [(1, 3, 2), (2, 4, 2)])  # epoch 3 redone
def test_a_crashed_run_resumes_from_its_last_state_to_the_uninterrupted_pattern(
    tmp_path, monkeypatch, caplog, checkpoint_every, crash_epoch, saved
):
    data = grating_data(4)  # batch 3: two batches per epoch
    settings = {"accelerations": (8,), "epochs": 4, "batch_size": 3, "checkpoint_every": checkpoint_every}
    whole = LOUPE(ConvThreshold(), data, tmp_path / "whole", **settings).run()[8.0]
    loupe = LOUPE(ConvThreshold(), data, tmp_path / "split", **settings)
    with monkeypatch.context() as m:
        crash_in_epoch(m, crash_epoch, batches_per_epoch=2)
        with pytest.raises(Crash):
            loupe.run()
    state = torch.load(loupe.state_path(8.0), weights_only=True)
    assert not loupe.pattern_path(8.0).exists()
    assert state["epoch"] == saved and len(state["loss_history"]) == saved and state["acceleration"] == 8.0
    assert state["fingerprint"] == loupe.fingerprint() and state["theta"].shape == (WIDTH,)
    assert set(state["optimizer"]) == {"state", "param_groups"} and state["seconds"] > 0
    with caplog.at_level("INFO", logger="common.apps.igs.loupe"):
        split = LOUPE(ConvThreshold(), data, tmp_path / "split", **settings).run()[8.0]  # a fresh process
    assert f"resuming from {loupe.state_path(8.0)} after epoch {saved}/4" in caplog.text
    same_result(split, whole)
    assert sidecar(split)["search_seconds"] >= state["seconds"]  # the earlier sitting counts
    assert not loupe.state_path(8.0).exists()


def test_time_limit_stops_after_an_epoch_and_reruns_finish_every_acceleration(tmp_path, caplog):
    data = grating_data(4)
    settings = {"accelerations": (8, 4), "epochs": 3, "batch_size": 3}
    whole = LOUPE(ConvThreshold(), data, tmp_path / "whole", **settings).run()
    out = tmp_path / "split"
    loupe = LOUPE(ConvThreshold(), data, out, time_limit=0, **settings)
    with caplog.at_level("INFO", logger="common.apps.igs.loupe"):
        assert loupe.run() == {}
    assert "x8 stopped after epoch 1/3" in caplog.text and "not written yet: x8, x4" in caplog.text
    assert "Run the same command again to continue" in caplog.text
    assert torch.load(loupe.state_path(8.0), weights_only=True)["epoch"] == 1
    assert not loupe.state_path(4.0).exists() and not loupe.pattern_path(8.0).exists()
    assert not loupe.loss_figure_path().exists()
    # one epoch per sitting; a sitting that finishes x8 has passed the limit and gives x4 one epoch
    sittings = [LOUPE(ConvThreshold(), data, out, time_limit=0, **settings).run() for _ in range(4)]
    assert [sorted(s) for s in sittings] == [[], [8.0], [8.0], [4.0, 8.0]]
    for acc in (8.0, 4.0):
        same_result(sittings[-1][acc], whole[acc])
        assert not loupe.state_path(acc).exists()
    assert loupe.loss_figure_path().read_bytes()[:8] == PNG


def test_a_state_made_otherwise_is_refused_naming_the_file(tmp_path):
    data = grating_data(4)
    settings = {"accelerations": (8,), "epochs": 3, "batch_size": 3}
    loupe = LOUPE(ConvThreshold(), data, tmp_path, time_limit=0, **settings)
    loupe.run()
    state_file = loupe.state_path(8.0)
    with pytest.raises(ValueError, match=r"loupe_magnitude_x8_state\.pt: made with other settings \(lr: expected 0\.1"):
        LOUPE(ConvThreshold(), data, tmp_path, lr=0.1, **settings).run()
    with pytest.raises(ValueError, match=r"x8_state\.pt: made with other settings \(epochs: expected 4, found 3"):
        LOUPE(ConvThreshold(), data, tmp_path, **{**settings, "epochs": 4}).run()
    state = torch.load(state_file, weights_only=True)
    torch.save({**state, "acceleration": 4.0}, state_file)
    with pytest.raises(ValueError, match=r"x8_state\.pt: expected the state of acceleration 8, found 4"):
        LOUPE(ConvThreshold(), data, tmp_path, **settings).run()
    del state["optimizer"]
    torch.save(state, state_file)
    with pytest.raises(
        ValueError, match=r"x8_state\.pt: expected a LOUPE state with .*found one without \['optimizer'\]"
    ):
        LOUPE(ConvThreshold(), data, tmp_path, **settings).run()
    del state["fingerprint"]
    torch.save(state, state_file)
    with pytest.raises(ValueError, match=r"x8_state\.pt: expected a fingerprint of the settings it was made with"):
        LOUPE(ConvThreshold(), data, tmp_path, **settings).run()


def test_loss_figure_and_its_input_checks(tmp_path):
    histories = {8.0: [0.6, 0.5, 0.45], 4.0: [0.4, 0.3, 0.25]}
    path = plot_loupe_loss(histories, {8.0: 0.5, 4.0: 0.2}, tmp_path / "loss.png")
    assert path == tmp_path / "loss.png" and path.read_bytes()[:8] == PNG
    assert plot_loupe_loss({16.0: [0.7]}, {}, tmp_path / "one.png").read_bytes()[:8] == PNG  # no marker, one epoch
    with pytest.raises(ValueError, match=r"histories: expected one or more accelerations .*found \{\}"):
        plot_loupe_loss({}, {}, tmp_path / "x.png")
    with pytest.raises(ValueError, match=r"histories: expected .* >= 1 epoch each, found \{8\.0: 3, 4\.0: 0\}"):
        plot_loupe_loss({8.0: [0.6, 0.5, 0.4], 4.0: []}, {}, tmp_path / "x.png")
    with pytest.raises(
        ValueError, match=r"search_losses: expected accelerations of histories \[8\.0\], found also \[4\.0\]"
    ):
        plot_loupe_loss({8.0: [0.6]}, {8.0: 0.5, 4.0: 0.3}, tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()


def test_per_channel_patterns(tmp_path):
    data = [{"image": np.concatenate([d["image"], d["image"]]), "label": d["label"]} for d in grating_data(4)]

    class FirstChannel(ConvThreshold):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return super().forward(x[:, :1])

    written = LOUPE(FirstChannel(), data, tmp_path, accelerations=(4,), epochs=2, batch_size=3, per_channel=True).run()
    mask = load_line_pattern(written[4.0], channels=2)
    meta = sidecar(written[4.0])
    assert mask.shape == (2, WIDTH) and mask.sum(1).tolist() == [8.0, 8.0] and meta["order"] is None
    assert [sorted(o) for o in meta["orders"]] == meta["lines"]


def test_bad_arguments(tmp_path):
    data = grating_data(2)
    with pytest.raises(ValueError, match="LOUPE: expected at least one slice in data, found none"):
        LOUPE(ConvThreshold(), [], tmp_path)
    with pytest.raises(ValueError, match=r"forward_model: expected one of \('magnitude', 'phase'\), found 'complex'"):
        LOUPE(ConvThreshold(), data, tmp_path, forward_model="complex")
    with pytest.raises(ValueError, match="epochs: expected >= 1, found 0"):
        LOUPE(ConvThreshold(), data, tmp_path, epochs=0)
    with pytest.raises(ValueError, match="batch_size: expected >= 1, found 0"):
        LOUPE(ConvThreshold(), data, tmp_path, batch_size=0)
    with pytest.raises(ValueError, match="lr: expected > 0, found 0"):
        LOUPE(ConvThreshold(), data, tmp_path, lr=0)
    with pytest.raises(ValueError, match="expected at least one line"):
        LOUPE(ConvThreshold(), data, tmp_path, accelerations=(64,))
    with pytest.raises(ValueError, match="pe_dim: expected -1"):
        LOUPE(ConvThreshold(), data, tmp_path, pe_dim=0)
    with pytest.raises(ValueError, match="checkpoint_every: expected >= 1, found 0"):
        LOUPE(ConvThreshold(), data, tmp_path, checkpoint_every=0)
    with pytest.raises(ValueError, match="time_limit: expected None or seconds >= 0, found -1"):
        LOUPE(ConvThreshold(), data, tmp_path, time_limit=-1)
