"""Benchmark of the zoom-in & zoom-out residual U-Net (bundles/resunet_zoom_atlas); prints measured figures.

(a) one training step (forward, 0.1 BCE + 0.9 soft Dice, backward, Adam) on one ``(1, 1, *crop)`` batch at the zoom-in
    and the zoom-out crop: wall seconds and process CPU seconds (all threads; less sensitive to other jobs on shared
    cores), median of ``repeats`` after one warm-up step; on CUDA also the peak allocated memory (bf16 autocast, as
    the bundle trains there).
(b) whole-volume inference of one subject: MONAI's sliding window (``roi`` = the zoom-out crop, overlap 0.5, Gaussian)
    over a ``volume``-sized input, and the original's single centre crop.

Untrained weights, random inputs. Seconds per epoch = seconds per step x training subjects (batch 1).

Usage: python benchmarks/bench_resunet_zoom_atlas.py [--features "[32,64,128,256]"] [--zoom_in "[128,128,128]"]
    [--zoom_out "[144,172,168]"] [--volume "[197,233,189]"] [--repeats 3] [--device auto] [--threads 0]
Demo sizes (configs/demo.json, 4 mm): --features "[8,16,32,64]" --zoom_in "[32,32,32]" --zoom_out "[36,43,42]"
    --volume "[49,58,47]"
"""

from __future__ import annotations

import datetime
import platform
import statistics
import time
from collections.abc import Callable, Sequence

import fire
import torch
from monai.inferers import SlidingWindowInferer
from monai.losses import DiceCELoss

from common.apps.zoom import CentreCropInferer
from common.networks.nets import ResUNet3d


def _timed(fn: Callable[[], object], device: torch.device, repeats: int) -> tuple[float, float]:
    """(median wall seconds, median process CPU seconds) of ``fn`` after one warm-up call."""
    fn()
    walls, cpus = [], []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        w, c = time.perf_counter(), time.process_time()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        walls.append(time.perf_counter() - w)
        cpus.append(time.process_time() - c)
    return statistics.median(walls), statistics.median(cpus)


def main(
    features: Sequence[int] = (32, 64, 128, 256),
    zoom_in: Sequence[int] = (128, 128, 128),
    zoom_out: Sequence[int] = (144, 172, 168),
    volume: Sequence[int] = (197, 233, 189),
    repeats: int = 3,
    device: str = "auto",
    threads: int = 0,
) -> None:
    dev = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device)
    if threads:
        torch.set_num_threads(threads)
    amp = dev.type == "cuda"
    print(
        f"# {datetime.date.today()} {platform.node()} {dev} torch {torch.__version__}, {torch.get_num_threads()} "
        f"threads; features {list(features)}"
    )
    torch.manual_seed(0)
    net = ResUNet3d(features=features).to(dev)
    print(f"parameters: {sum(p.numel() for p in net.parameters()):,}")
    loss_fn = DiceCELoss(sigmoid=True, batch=True, lambda_dice=0.9, lambda_ce=0.1)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3, weight_decay=1e-4)
    for stage, crop in (("zoom-in", zoom_in), ("zoom-out", zoom_out)):
        x = torch.randn(1, 1, *crop, device=dev)
        y = (torch.rand(1, 1, *crop, device=dev) > 0.95).float()

        def step() -> None:
            opt.zero_grad(set_to_none=True)
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=amp):
                loss = loss_fn(net(x), y)
            loss.backward()
            opt.step()

        if dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats(dev)
        wall, cpu = _timed(step, dev, repeats)
        mem = f", peak {torch.cuda.max_memory_allocated(dev) / 2**30:.2f} GiB" if dev.type == "cuda" else ""
        print(f"(a) {stage} crop {list(crop)}: training step {wall:.2f} s wall, {cpu:.2f} s CPU{mem}")
    net.eval()
    image = torch.randn(1, 1, *volume, device=dev)
    for name, inferer in (
        ("sliding window", SlidingWindowInferer(list(zoom_out), sw_batch_size=1, overlap=0.5, mode="gaussian")),
        ("centre crop", CentreCropInferer(list(zoom_out))),
    ):

        def infer() -> None:
            with torch.no_grad(), torch.autocast(dev.type, dtype=torch.bfloat16, enabled=amp):
                inferer(image, net)

        wall, cpu = _timed(infer, dev, repeats)
        print(f"(b) {name} over {list(volume)} (roi {list(zoom_out)}): {wall:.2f} s wall, {cpu:.2f} s CPU per subject")


if __name__ == "__main__":
    fire.Fire(main)
