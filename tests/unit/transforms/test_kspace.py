"""common.transforms.kspace and common.utils.fft: FFT helpers against NumPy and MONAI, masks (line counts,
seeds), transforms, gradients, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.networks.blocks.fft_utils_t import fftn_centered_t

from common.apps.igs import cache_line_spectra, network_input, slice_key
from common.networks.blocks import KSpaceUndersampler
from common.transforms import (
    CenterLines,
    EquispacedLines,
    FullLines,
    KSpaceUndersample,
    KSpaceUndersampled,
    LearnedLines,
    OneSidedCenterLines,
    RandomLines,
    distinct_frequencies,
    line_mask,
    line_pattern,
    line_spectrum,
    load_line_pattern,
    num_lines,
    phase_seed,
    save_line_pattern,
    smooth_phase,
    undersample,
    undersample_lines,
)
from common.utils import fft2c, ifft2c


def np_undersample(x: np.ndarray, mask2d: np.ndarray) -> np.ndarray:
    axes = (-2, -1)
    k = np.fft.fftshift(np.fft.fft2(np.fft.ifftshift(x, axes=axes), norm="ortho"), axes=axes)
    return np.abs(np.fft.fftshift(np.fft.ifft2(np.fft.ifftshift(k * mask2d, axes=axes), norm="ortho"), axes=axes))


@pytest.mark.parametrize("shape", [(3, 33, 34), (2, 1, 35, 32)])
def test_fft2c_matches_numpy_and_monai(shape):
    x = torch.randn(shape, dtype=torch.float64)
    ref = np.fft.fftshift(np.fft.fft2(np.fft.ifftshift(x.numpy(), axes=(-2, -1)), norm="ortho"), axes=(-2, -1))
    k = fft2c(x)
    np.testing.assert_allclose(k.numpy(), ref, atol=1e-10)
    monai_k = torch.view_as_complex(fftn_centered_t(torch.stack([x, torch.zeros_like(x)], -1), spatial_dims=2))
    np.testing.assert_allclose(k.numpy(), monai_k.numpy(), atol=1e-10)
    np.testing.assert_allclose(ifft2c(k).real.numpy(), x.numpy(), atol=1e-10)


@pytest.mark.parametrize("pe_dim", [-1, -2])
def test_line_undersampling_equals_2d_numpy_reference(pe_dim):
    rng = np.random.default_rng(0)
    x = np.abs(rng.normal(size=(2, 3, 33, 34)))
    width = x.shape[pe_dim]
    m = line_mask("random", width, 4, 0.1, seed=1).numpy()
    mask2d = m[None, :] if pe_dim == -1 else m[:, None]
    out = undersample(torch.as_tensor(x), torch.as_tensor(m, dtype=torch.float64), pe_dim=pe_dim)
    np.testing.assert_allclose(out.numpy(), np_undersample(x, mask2d), atol=1e-10)
    spectrum = line_spectrum(torch.as_tensor(x), pe_dim)
    np.testing.assert_allclose(
        undersample_lines(spectrum, torch.as_tensor(m, dtype=torch.float64), pe_dim).numpy(), out.numpy(), atol=1e-10
    )


def test_point_mask_and_per_channel_lines():
    rng = np.random.default_rng(1)
    x = np.abs(rng.normal(size=(2, 16, 16)))
    point = (rng.random((16, 16)) > 0.6).astype(np.float64)
    out = undersample(torch.as_tensor(x), torch.as_tensor(point), point=True)
    np.testing.assert_allclose(out.numpy(), np_undersample(x, point), atol=1e-10)
    per_channel = np.stack([line_mask("center", 16, 4).numpy(), line_mask("equispaced", 16, 4, 0.125).numpy()])
    out = undersample(torch.as_tensor(x), torch.as_tensor(per_channel))
    for c in range(2):
        np.testing.assert_allclose(out[c].numpy(), np_undersample(x[c], per_channel[c][None]), atol=1e-10)


def test_full_mask_is_identity():
    x = torch.rand(4, 1, 32, 32)
    np.testing.assert_allclose(undersample(x, torch.ones(32)).numpy(), x.numpy(), atol=1e-5)
    np.testing.assert_allclose(undersample(x, torch.ones(32, 32), point=True).numpy(), x.numpy(), atol=1e-5)


def test_gradcheck_mask_and_image():
    x = (torch.rand(1, 1, 6, 8, dtype=torch.float64) + 0.5).requires_grad_(True)
    m = (torch.rand(8, dtype=torch.float64) + 0.2).requires_grad_(True)  # away from |.| = 0 kinks
    assert torch.autograd.gradcheck(lambda a, b: undersample(a, b), (x, m))
    module = KSpaceUndersampler(torch.ones(8), trainable=True)
    module(torch.rand(2, 1, 6, 8)).sum().backward()
    assert module.mask.grad is not None and module.mask.grad.shape == (8,)


@pytest.mark.parametrize("acc,expected", [(4, 64), (8, 32), (16, 16)])
@pytest.mark.parametrize("kind", ["center", "one_sided", "equispaced", "random"])
def test_exact_line_counts(kind, acc, expected):
    mask = line_mask(kind, 256, acc, center_fraction=0.08 if acc == 4 else 0.04, seed=3)
    assert mask.shape == (256,) and int(mask.sum()) == expected
    assert set(mask.unique().tolist()) <= {0.0, 1.0}
    assert mask[128] == 1  # the k-space centre is always sampled


def test_center_block_and_equispaced_layout():
    c = CenterLines(16)(256).nonzero().flatten()
    assert c.tolist() == list(range(120, 136))
    e = EquispacedLines(16, 0.04)(256).nonzero().flatten().numpy()
    center = np.arange(123, 133)  # round(256 * 0.04) = 10 centre lines
    assert set(center) <= set(e)
    gaps = np.diff(np.setdiff1d(e, center))
    assert gaps.max() - gaps.min() <= 12  # evenly spread apart from the centre gap


@pytest.mark.parametrize("width", [256, 33, 34])
@pytest.mark.parametrize("acc", [4, 8, 16])
def test_one_sided_block_covers_each_frequency_once(width, acc):
    """The one-sided block is ``c .. c + n - 1`` from the centre ``c = width // 2``: each |f| from 0 to n - 1 once.
    The centred block of the same budget covers n // 2 + 1 (its other lines are mirrors), about half as many."""
    n, c = width // acc, width // 2
    one_sided = OneSidedCenterLines(acc)(width)
    assert one_sided.nonzero().flatten().tolist() == list(range(c, c + n)) and int(one_sided.sum()) == n
    freq = np.abs(np.arange(width) - c)
    assert sorted(freq[one_sided.numpy() > 0].tolist()) == list(range(n))  # every |f| < n exactly once
    assert distinct_frequencies(one_sided) == n
    center = CenterLines(acc)(width)
    assert int(center.sum()) == n and distinct_frequencies(center) == n // 2 + 1
    assert distinct_frequencies(torch.stack([center, one_sided])) == [n // 2 + 1, n]  # per row of a (C, W) pattern
    assert torch.equal(line_mask("one_sided", width, acc), one_sided)
    assert isinstance(line_pattern("one_sided", acc), OneSidedCenterLines)


def test_distinct_frequencies_counts_mirror_pairs_once():
    mask = torch.zeros(16)
    mask[[8 - 3, 8 + 3, 8, 0]] = 1.0  # |f| 3 twice (mirrors), 0, and the unpaired Nyquist line |f| = 8
    assert distinct_frequencies(mask) == 3
    assert distinct_frequencies(np.where(np.arange(16) % 2 == 0, 0.5, 0.0)) == 5  # weights > 0 count: |f| 0,2,4,6,8
    with pytest.raises(ValueError, match=r"mask: expected a \(W,\) or \(C, W\) line pattern, found shape \(2, 2, 4\)"):
        distinct_frequencies(torch.ones(2, 2, 4))
    with pytest.raises(ValueError, match="expected a one-sided block of 4 lines to fit .* found room for 2"):
        OneSidedCenterLines(1)(4)


def test_seeded_determinism_and_global_rng_untouched():
    torch.manual_seed(0)
    np.random.seed(0)
    state_t, state_n = torch.get_rng_state(), np.random.get_state()[1].copy()
    a = RandomLines(8, 0.04)(256, seed=5)
    b = RandomLines(8, 0.04)(256, seed=5)
    c = RandomLines(8, 0.04)(256, seed=6)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(torch.get_rng_state(), state_t) and np.array_equal(np.random.get_state()[1], state_n)


def test_transform_pair_2d_and_stack_keeps_meta(tmp_path):
    from monai.data import MetaTensor

    mask = line_mask("center", 32, 4)
    img = MetaTensor(torch.rand(1, 24, 32, 5), affine=torch.diag(torch.tensor([2.0, 2.0, 8.0, 1.0])))
    out = KSpaceUndersample(mask)(img)
    assert isinstance(out, MetaTensor) and out.shape == img.shape and torch.equal(out.affine, img.affine)
    for s in range(5):  # each slice of the stack is undersampled in-plane
        torch.testing.assert_close(out[..., s], undersample(img.as_tensor()[..., s], mask), atol=1e-5, rtol=0)
    d = KSpaceUndersampled(["image"], mask)({"image": img[..., 0], "label": 1})
    torch.testing.assert_close(d["image"].as_tensor(), out[..., 0].as_tensor(), atol=1e-6, rtol=0)
    assert d["label"] == 1


def test_pattern_file_round_trip_and_errors(tmp_path):
    mask = line_mask("equispaced", 64, 8, 0.04)
    path = save_line_pattern(tmp_path / "p", mask, order=[32, 31], acceleration=8, forward_model="magnitude")
    assert torch.equal(load_line_pattern(path, width=64), mask)
    img = torch.rand(1, 48, 64)
    torch.testing.assert_close(KSpaceUndersample(str(path))(img), KSpaceUndersample(mask)(img))
    with pytest.raises(ValueError, match="expected a pattern 128 lines wide, found 64"):
        load_line_pattern(path, width=128)
    (tmp_path / "bad.npy").write_text("not numpy")
    with pytest.raises(ValueError, match="bad.npy: expected a NumPy"):
        load_line_pattern(tmp_path / "bad.npy")
    with pytest.raises(FileNotFoundError, match="missing.npy"):
        load_line_pattern(tmp_path / "missing.npy")
    with pytest.raises(ValueError, match="expected an image 64 lines wide"):
        KSpaceUndersample(mask)(torch.rand(1, 64, 32))


def test_acceleration_without_lines_is_an_error():
    with pytest.raises(ValueError, match="expected at least one line"):
        num_lines(16, 32)
    with pytest.raises(ValueError, match="expected at least one line"):
        line_mask("center", 8, 16)
    with pytest.raises(ValueError, match="acceleration: expected a factor >= 1"):
        CenterLines(0.5)


@pytest.mark.parametrize(
    "kind,acc,cf",
    [("center", 4, None), ("one_sided", 8, None), ("equispaced", 8, 0.04), ("random", 4, 0.08), ("full", 1, None)],
)
def test_mask_factory_equals_tensor_mask(kind, acc, cf):
    img = torch.rand(2, 33, 34, 3)  # odd height, stack of 3 slices
    factory = line_pattern(kind, acc, cf, seed=7)
    expected = KSpaceUndersample(line_mask(kind, 34, acc, cf, seed=7))(img)
    op = KSpaceUndersample(factory)
    torch.testing.assert_close(op(img), expected)
    torch.testing.assert_close(op(img), expected)  # the bound seed gives the same mask every call
    assert op.mask is None  # built per call, no state left on the object
    d = KSpaceUndersampled("image", factory)({"image": img[..., 0]})
    torch.testing.assert_close(d["image"], expected[..., 0])
    for pe_dim, x in ((-2, img.transpose(1, 2)),):  # lines along H: the factory gets the height
        torch.testing.assert_close(KSpaceUndersample(factory, pe_dim=pe_dim)(x), expected.transpose(1, 2))


def test_learned_factory_reads_the_file_at_call_time(tmp_path):
    path = tmp_path / "models" / "igs_x8.npy"
    op = KSpaceUndersampled("image", line_pattern("learned", 8, pattern_file=path))  # no file yet: no error
    img = torch.rand(1, 32, 32)
    with pytest.raises(FileNotFoundError, match=r"igs_x8\.npy: expected a k-space line pattern .*IGS search"):
        op({"image": img})
    mask = line_mask("equispaced", 32, 8, 0.04)
    save_line_pattern(path, mask, forward_model="magnitude")
    torch.testing.assert_close(op({"image": img})["image"], KSpaceUndersample(mask)(img))
    assert isinstance(line_pattern("learned", pattern_file=path), LearnedLines)
    with pytest.raises(ValueError, match="expected a pattern 64 lines wide, found 32"):
        op({"image": torch.rand(1, 32, 64)})


def test_line_pattern_and_factory_errors(tmp_path):
    with pytest.raises(
        ValueError, match="kind: expected one of center, one_sided, equispaced, random, full, learned, found 'x'"
    ):
        line_pattern("x", 4)
    with pytest.raises(ValueError, match="pattern_file: expected"):
        line_pattern("learned", 4)
    with pytest.raises(ValueError, match="center_fraction: expected"):
        line_pattern("random", 4)
    with pytest.raises(ValueError, match="acceleration: expected a factor >= 1"):
        line_pattern("equispaced", 0.5, 0.04)
    with pytest.raises(ValueError, match="point mask tensor"):
        KSpaceUndersample(CenterLines(4), point=True)


@pytest.mark.parametrize("pe_dim", [-1, -2])
@pytest.mark.parametrize("per_channel", [False, True])
def test_phase_model_acquires_what_the_search_caches(pe_dim, per_channel):
    """For a slice's seed, the transform's phase model gives the zero-filled image the IGS search and the comparison
    see (``cache_line_spectra`` + ``network_input`` before normalisation); a stack's slice ``d`` gets seed + ``d``."""
    g = torch.Generator().manual_seed(0)
    items = [
        {"image": torch.rand(2, 24, 32, generator=g), "label": torch.zeros(1, 24, 32), "patient": p, "slice": k}
        for p, k in (("patient001", 3), ("patient002", 0))
    ]
    width = 32 if pe_dim == -1 else 24
    rows = [line_mask("random", width, 4, 0.08, seed=s) for s in (1, 2)]
    mask = torch.stack(rows) if per_channel else rows[0]
    spectra = cache_line_spectra(items, pe_dim, forward_model="phase", phase_seed_base=5)[0][0]
    expected = network_input(spectra, mask, pe_dim, normalize=None)
    for item, reference in zip(items, expected):
        seed = phase_seed(slice_key(item), 5)
        got = KSpaceUndersample(mask, pe_dim, forward_model="phase", phase_seed=seed)(item["image"])
        torch.testing.assert_close(got, reference, atol=1e-5, rtol=1e-5)
        magnitude = KSpaceUndersample(mask, pe_dim)(item["image"])
        assert (got - magnitude).abs().max() > 1e-2  # the phase changes what undersampling loses
    stack = torch.stack([item["image"] for item in items], -1)  # (C, H, W, 2)
    got = KSpaceUndersampled("image", mask, pe_dim, forward_model="phase", phase_seed=7)({"image": stack})["image"]
    for d in range(2):
        one = KSpaceUndersample(mask, pe_dim, forward_model="phase", phase_seed=7 + d)(stack[..., d])
        torch.testing.assert_close(got[..., d], one, atol=1e-6, rtol=0)
    phase = smooth_phase(24, 32, 7)  # what slice 0 was given
    direct = undersample(torch.polar(stack[..., 0], phase), mask, pe_dim)
    torch.testing.assert_close(got[..., 0], direct, atol=1e-6, rtol=0)


@pytest.mark.parametrize("forward_model", ["magnitude", "phase"])
@pytest.mark.parametrize("shape", [(2, 24, 32), (2, 24, 32, 3)])
def test_full_sampling_gives_the_image_back_under_both_models(forward_model, shape):
    img = torch.rand(*shape, generator=torch.Generator().manual_seed(1))
    lines = KSpaceUndersample(FullLines(), forward_model=forward_model, phase_seed=3)
    points = KSpaceUndersample(torch.ones(24, 32), point=True, forward_model=forward_model, phase_seed=3)
    for op in (lines, points):
        torch.testing.assert_close(op(img), img, atol=1e-5, rtol=0)


def test_learned_pattern_of_another_forward_model_is_refused(tmp_path):
    """A pattern's JSON sidecar must name the forward model the transform simulates, path or ``LearnedLines`` alike;
    without a forward model to check (a bare ``LearnedLines``), any pattern is read."""
    mask, img = line_mask("center", 32, 8), torch.rand(1, 32, 32)
    path = save_line_pattern(tmp_path / "igs_magnitude_x8", mask, forward_model="magnitude")
    torch.testing.assert_close(KSpaceUndersample(str(path))(img), KSpaceUndersample(mask)(img))
    refused = r"igs_magnitude_x8\.json: expected a pattern learned under the 'phase' forward model .*found 'magnitude'"
    for learned in (str(path), path, LearnedLines(path), line_pattern("learned", pattern_file=path)):
        with pytest.raises(ValueError, match=refused + r"; pass --forward_model magnitude or point --pattern_file"):
            KSpaceUndersample(learned, forward_model="phase")(img)
    op = KSpaceUndersampled("image", LearnedLines(path, "magnitude"), forward_model="phase")  # the transform's wins
    with pytest.raises(ValueError, match=refused):
        op({"image": img})
    torch.testing.assert_close(LearnedLines(path)(32), mask)  # nothing to check against
    save_line_pattern(tmp_path / "hand_made", mask)  # a sidecar that names no forward model
    unnamed = r"hand_made\.json: expected a pattern learned under the 'magnitude' .*found no forward_model"
    with pytest.raises(ValueError, match=unnamed):
        KSpaceUndersample(tmp_path / "hand_made.npy")(img)
    (tmp_path / "hand_made.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"hand_made\.json: expected the JSON sidecar of hand_made\.npy"):
        KSpaceUndersample(tmp_path / "hand_made.npy")(img)
    with pytest.raises(ValueError, match=r"forward_model: expected one of \('magnitude', 'phase'\), found 'complex'"):
        KSpaceUndersample(mask, forward_model="complex")
    with pytest.raises(ValueError, match="phase_seed: expected a seed >= 0, found -1"):
        KSpaceUndersample(mask, forward_model="phase", phase_seed=-1)
