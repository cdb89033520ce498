"""Benchmarks of the k-space undersampling transform and the IGS search; prints measured figures.

(a) ``undersample``: our batched transform vs MONAI's ``EquispacedKspaceMaskd`` (per image, as a MONAI pipeline runs
    it) on the same magnitude images, images/s and the ratio (target >= 5x).
(b) one IGS iteration over N slices: cached phase-encoding k-space (+ bf16 autocast, channels-last on CUDA) vs a
    seed-style loop that recomputes the 2D FFT of every batch in fp32 (target >= 10x on GPU).
(c) a full search to x4 (width/4 - 1 iterations) over N slices: seconds (target under 60 s for ~1,900 slices of
    256x256 on one H100).

Usage: python benchmarks/bench_kspace_igs.py [--size 256] [--n_a 256] [--n_b 256] [--n_c 1900] [--batch 0 (auto)]
    [--features 32] [--skip_c]
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import fire
import torch
from monai.apps.reconstruction.transforms.dictionary import EquispacedKspaceMaskd
from monai.networks.nets import BasicUNet

from common.apps.igs import IterativeGradientSampling, cache_line_spectra, igs_loss, mask_gradient
from common.transforms import line_mask, undersample
from common.utils import fft2c

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # the reference implementations live in the test-support module
from tests.support.reference import seed_style_mask_gradient  # noqa: E402


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _timed(fn, device: torch.device, repeat: int = 3) -> float:
    fn()  # warm-up
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(repeat):
        fn()
    _sync(device)
    return (time.perf_counter() - t0) / repeat


def _unet(size_features: int, device: torch.device) -> torch.nn.Module:
    """The bundle's U-Net shape with random weights; channels-last on CUDA, as the search runs it."""
    f = size_features
    memory_format = torch.channels_last if device.type == "cuda" else torch.contiguous_format
    return (
        BasicUNet(
            2,
            1,
            4,
            features=(f, 2 * f, 4 * f, 8 * f, 16 * f, f),
            norm=("instance", {"affine": True}),
            act=("LeakyReLU", {"negative_slope": 0.2}),
            upsample="deconv",
        )
        .to(device, memory_format=memory_format)
        .eval()
    )


def bench_transform(size: int, n: int, device: torch.device) -> None:
    images = torch.rand(n, 1, size, size, device=device)
    mask = line_mask("equispaced", size, 4, 0.08).to(device)
    ours = _timed(lambda: undersample(images, mask), device)
    monai_t = EquispacedKspaceMaskd(
        keys=["kspace"], center_fractions=[0.08], accelerations=[4], spatial_dims=2, is_complex=True
    )
    monai_t.set_random_state(0)

    def monai_loop() -> None:
        for img in images:  # a MONAI pipeline transforms one item at a time
            k = torch.view_as_real(fft2c(img))  # (1, H, W, 2) real view, as the transform expects
            monai_t({"kspace": k})

    theirs = _timed(monai_loop, device, repeat=1)
    print(
        f"(a) {n} images {size}x{size} on {device}: ours {n / ours:,.0f} img/s, MONAI EquispacedKspaceMaskd "
        f"{n / theirs:,.0f} img/s, ratio {theirs / ours:.1f}x"
    )


def bench_iteration(size: int, n: int, device: torch.device, features: int, batch: int) -> None:
    net = _unet(features, device)
    for p in net.parameters():
        p.requires_grad_(False)
    loss_fn = igs_loss("dice")
    images = torch.rand(n, 1, size, size)
    labels = torch.randint(0, 4, (n, 1, size, size)).float()
    mask = line_mask("center", size, 16).to(device)
    items = [{"image": images[i].numpy(), "label": labels[i].numpy()} for i in range(n)]
    amp = device.type == "cuda"  # bfloat16 autocast (float16 with a loss scale before compute capability 8.0)
    batches = cache_line_spectra(items, batch_size=batch, device=device)
    ours = _timed(lambda: mask_gradient(net, batches, mask, loss_fn, amp=amp), device, repeat=2)

    def seed_style() -> None:  # the original: FFT of every batch recomputed each iteration, fp32, small batches
        seed_style_mask_gradient(net, images, labels, mask, loss_fn, batch_size=8)

    theirs = _timed(seed_style, device, repeat=2)
    print(
        f"(b) one IGS iteration, {n} slices {size}x{size}, U-Net {features} features, on {device}: cached "
        f"{ours:.2f} s (batch {batch}{', AMP' if amp else ''}), seed-style {theirs:.2f} s, ratio "
        f"{theirs / ours:.1f}x"
    )


def bench_search(size: int, n: int, device: torch.device, features: int, batch: int, out: str) -> float:
    """Seconds of a full search to x4 (``size // 4 - 1`` iterations) over ``n`` random slices; printed and returned."""
    net = _unet(features, device)
    items = [
        {"image": torch.rand(1, size, size).numpy(), "label": torch.randint(0, 4, (1, size, size)).float().numpy()}
        for _ in range(n)
    ]
    igs = IterativeGradientSampling(
        net, items, out, accelerations=(4,), batch_size=batch, device=device, amp=device.type == "cuda", resume=False
    )
    t0 = time.perf_counter()
    igs.run()
    _sync(device)
    seconds = time.perf_counter() - t0
    print(
        f"(c) full x4 search ({size // 4 - 1} iterations), {n} slices {size}x{size}, U-Net {features} features, on "
        f"{device}: {seconds:.1f} s, {size // 4} lines"
    )
    return seconds


def main(
    size: int = 256,
    n_a: int = 256,
    n_b: int = 256,
    n_c: int = 1900,
    features: int = 32,
    batch: int = 0,
    skip_c: bool = False,
    out: str = "/tmp/bench_igs",
) -> None:
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    batch = batch or (128 if device.type == "cuda" else 8)  # CPU convolutions run fastest in small batches
    print(f"device {device}, torch {torch.__version__}, threads {torch.get_num_threads()}, batch {batch}")
    bench_transform(size, n_a, device)
    bench_iteration(size, n_b, device, features, batch)
    if not skip_c:
        bench_search(size, n_c, device, features, batch, out)


if __name__ == "__main__":
    fire.Fire(main)
