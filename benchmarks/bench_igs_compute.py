"""igs_acdc compute at real size and at the demo's size: FLOP per slice and measured seconds per slice, and from them
the cost of each step of the bundle (training, LOUPE, the search, the comparison) in network passes and time.

FLOP are counted by ``torch.utils.flop_counter`` on one forward pass of the bundle's U-Net (``configs/train.json``:
256x256, 32 base features; ``configs/demo.json``: 128x128, 8 base features); a backward pass is counted as twice a
forward. Seconds per slice are measured here (forward alone, and forward + backward, batch ``--batch``), so the
estimates below are for this machine; ``--gpu_tflops`` is an assumed sustained throughput for a GPU estimate (not
measured: say so when quoting it).

Passes per step (``N`` training slices, ``E`` epochs), as the bundle runs them:
- training: ``E`` epochs of forward + backward over ``N`` slices (plus validation forwards, left out);
- LOUPE: ``loupe_epochs`` epochs of forward + backward per acceleration;
- IGS growth: one forward + backward over ``N`` per added line (to the x4 budget), plus ``lookahead`` forwards per
  line; swaps: up to ``max_swaps`` x (one forward + backward + ``swap_candidates`` forwards) per budget; guards: one
  forward per guard per budget (5 + 5 + 2 + LOUPE's);
- comparison: per fine-tuned pattern ``fine_tune_epochs`` epochs of forward + backward, plus a forward over the test
  slices per row.

Usage:
    python benchmarks/bench_igs_compute.py [--train_slices 1520] [--demo_slices 340] [--batch 8] [--repeats 3]
        [--gpu_tflops 100]
"""

from __future__ import annotations

import time

import fire
import torch
from monai.networks.nets import BasicUNet
from torch.utils.flop_counter import FlopCounterMode

SIZES = {
    "default": {"image_size": 256, "features": (32, 64, 128, 256, 512, 32)},
    "demo": {"image_size": 128, "features": (8, 16, 32, 64, 128, 8)},
}


def _net(features: tuple[int, ...]) -> torch.nn.Module:
    """The bundle's U-Net (``network_def`` of configs/train.json) with ``features``."""
    return BasicUNet(
        spatial_dims=2,
        in_channels=1,
        out_channels=4,
        features=features,
        norm=("instance", {"affine": True}),
        act=("LeakyReLU", {"negative_slope": 0.2, "inplace": True}),
        upsample="deconv",
    )


def _forward_flop(net: torch.nn.Module, size: int) -> float:
    with FlopCounterMode(display=False) as counter:
        net(torch.zeros(1, 1, size, size))
    return float(counter.get_total_flops())


def _seconds(net: torch.nn.Module, size: int, batch: int, repeats: int, backward: bool) -> float:
    """Median seconds per slice of a forward (and backward) pass over a batch."""
    x = torch.randn(batch, 1, size, size)
    times = []
    for _ in range(repeats + 1):  # the first is a warm-up
        t0 = time.perf_counter()
        if backward:
            net.zero_grad(set_to_none=True)
            net(x).float().mean().backward()
        else:
            with torch.no_grad():
                net(x)
        times.append(time.perf_counter() - t0)
    return sorted(times[1:])[len(times[1:]) // 2] / batch


def main(
    train_slices: int = 1520,
    demo_slices: int = 340,
    batch: int = 8,
    repeats: int = 3,
    gpu_tflops: float = 100.0,
    epochs: int = 100,
    loupe_epochs: int = 100,
    fine_tune_epochs: int = 10,
    fine_tuned_patterns: int = 24,
    lookahead: int = 8,
    max_swaps: int = 32,
    swap_candidates: int = 8,
) -> None:
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; GPU figures assume {gpu_tflops:g} TFLOP/s")
    for name, size_info in SIZES.items():
        size, features = size_info["image_size"], size_info["features"]
        n = train_slices if name == "default" else demo_slices
        net = _net(features)
        flop = _forward_flop(net, size)
        fwd = _seconds(net, size, batch, repeats, backward=False)
        fwd_bwd = _seconds(net, size, batch, repeats, backward=True)
        x4 = size // 4
        passes = {  # (forward + backward passes, forward-only passes) over one slice each
            "training": (epochs * n, 0),
            "LOUPE (x16, x8, x4)": (3 * loupe_epochs * n, 0),
            "IGS growth to x4, lookahead": (x4 * n, x4 * lookahead * n),
            "IGS swaps (3 budgets, at most)": (3 * max_swaps * n, 3 * max_swaps * swap_candidates * n),
            "comparison fine-tuning": (fine_tuned_patterns * fine_tune_epochs * n, 0),
        }
        print(
            f"\n{name}: {size}x{size}, features {list(features)}, {flop / 1e9:.2f} GFLOP forward per slice; measured "
            f"{fwd * 1e3:.1f} ms forward, {fwd_bwd * 1e3:.1f} ms forward + backward per slice ({n} training slices)"
        )
        print("| step | fwd+bwd slice passes | fwd slice passes | PFLOP | this machine | GPU (assumed) |")
        print("|---|---|---|---|---|---|")
        for step, (both, only) in passes.items():
            total = (3 * both + only) * flop
            cpu = both * fwd_bwd + only * fwd
            print(
                f"| {step} | {both:,} | {only:,} | {total / 1e15:.2f} | {cpu / 3600:.1f} h | "
                f"{total / (gpu_tflops * 1e12) / 60:.1f} min |"
            )


if __name__ == "__main__":
    fire.Fire(main)
