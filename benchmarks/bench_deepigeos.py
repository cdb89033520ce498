"""Benchmarks of the DeepIGeoS building blocks (geodesic maps, R-Net, CRF-Net, P-Net); prints measured figures.

(a) one refinement step (:func:`common.apps.deepigeos.refine`) on a synthetic BraTS-sized volume, per tumour size:
    simulated clicks on the P-Net errors; in the region of the label and clicks, two geodesic maps, the 3D R-Net
    forward (``--context`` 3d or 2.5d; as trained, and after ``optimize_for_inference``) and CRF-Net(fu)
    iterations; seconds per part (targets: under 5 s on 2 CPU cores, under 1 s on a GPU).
(b) geodesic maps of a 3D volume: GeodisTK vs FastGeodis on CPU vs FastGeodis on CUDA, side by side (median of
    repeats, with min and max: FastGeodis' OpenMP path is erratic on shared cores).
(c) CRF-Net forward + backward on a 3D volume, per window: seconds and peak memory (each in a fresh process; on CPU
    the peak resident memory above the inputs, with glibc's default and a fixed mmap threshold; on CUDA
    ``max_memory_allocated``).
(d) 3D P-Net (training mode, cross-entropy loss) forward + backward on one ``(1, 1, n, n, n)`` batch, for the full
    3D context (every convolution 3x3x3) and the 2.5D form (3x3x1 after the first): parameters, wall seconds,
    process CPU seconds (all threads; less sensitive to other jobs on shared cores) and peak memory, each in a fresh
    process as in (c) (glibc's default allocator on CPU).
(e) successive clicks as the served ``refine`` runs them (:func:`common.apps.deepigeos.refine_clicks` on an image as
    loaded: brain crop and normalisation, refinement, label pasted back), per volume of ``--click_volumes``: the
    automatic label stays, the clicks accumulate (foreground and background in turn, simulated on its errors), and
    each click is timed without and with a :class:`common.apps.deepigeos.RefinementCache` kept over the clicks
    (first, second and fifth click by default): wall seconds, process CPU seconds, the parts of the step, the box
    (a changed box recomputes the cached maps) and the voxels where the two labels differ.

The data are synthetic (an ellipsoid "brain" with an ellipsoidal "tumour", Gaussian noise); untrained weights. CUDA
is used automatically when available (``--device cpu`` to force the CPU, ``--device cuda`` for the GPU).

Usage: python benchmarks/bench_deepigeos.py [--volume "[240,240,155]"] [--tumours "[30,60,90]"] [--margin 16]
    [--context 3d] [--geodesic_size 128]
    [--crf_size 96] [--crf_windows "[3,5]"] [--crf_iterations 5] [--pnet_size 96] [--repeats 3] [--device auto]
    [--parts abcd] [--click_volumes "[[64,64,48],[240,240,155]]"] [--clicks "[1,2,5]"]
    [--threads 0]  (0: torch's default; on cores shared with other jobs, 1 thread avoids OpenMP barrier stalls)
"""

from __future__ import annotations

import datetime
import multiprocessing as mp
import os
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from unittest import mock

import fire
import monai
import numpy as np
import torch
import torch.nn.functional as F
from monai.data import MetaTensor

from common.apps.deepigeos import Refinement, RefinementCache, interactive, refine, refine_clicks
from common.networks import optimize_for_inference
from common.networks.blocks import CRFNet
from common.networks.nets import PNet, rnet
from common.transforms import SimulateClicks, geodesic_map, has_fastgeodis


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _seconds(fn: Callable[[], object], device: torch.device) -> tuple[float, object]:
    _sync(device)
    t0 = time.perf_counter()
    out = fn()
    _sync(device)
    return time.perf_counter() - t0, out


def synthetic_case(
    shape: Sequence[int], tumour: float = 24, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """z-scored image ``(1, *shape)``, an ellipsoidal tumour ``tumour`` voxels across (in the first axis) and a
    P-Net-like label that misses a cap of it (foreground clicks) and leaks into a blob beside it (background
    clicks)."""
    rng = np.random.default_rng(seed)
    grid = np.meshgrid(*[np.arange(s, dtype=np.float32) - s / 2 for s in shape], indexing="ij")
    brain = _brain(grid, shape)
    centre = [0.15 * s for s in shape]
    radii = [tumour / 2, 0.85 * tumour / 2, 0.7 * tumour / 2][: len(shape)]
    inside = sum((g - c) ** 2 / r**2 for g, c, r in zip(grid, centre, radii))
    truth = inside < 1
    image = brain * 1.0 + truth * 1.5 + rng.normal(0, 0.2, shape).astype(np.float32)
    image = (image - image.mean()) / image.std()
    pred = truth & ~(grid[0] > centre[0] + 0.5 * radii[0])  # a missed cap
    leak = [c + (r + 0.25 * radii[0]) * (i == 1) for i, (c, r) in enumerate(zip(centre, radii))]
    pred |= sum((g - c) ** 2 for g, c in zip(grid, leak)) < (0.4 * radii[0]) ** 2  # a leak beside the tumour
    return image[None].astype(np.float32), truth[None].astype(np.uint8), pred[None].astype(np.uint8)


def _brain(grid: Sequence[np.ndarray], shape: Sequence[int]) -> np.ndarray:
    """The ellipsoidal "brain" of :func:`synthetic_case` on its centred coordinate ``grid``."""
    return sum(g**2 / (r * s / 2) ** 2 for g, r, s in zip(grid, (0.8, 0.9, 0.85), shape)) < 1


def bench_refinement(
    shape: Sequence[int],
    tumours: Sequence[float],
    margin: int,
    device: torch.device,
    features: int,
    context: str,
    window: int,
    iterations: int,
) -> list[float]:
    """:func:`common.apps.deepigeos.refine` as the MONAI Label refinement will call it, on the whole volume; returns
    the step's seconds of the ``optimize_for_inference`` R-Net per tumour size."""
    totals = []
    net = rnet(3, features=(features,) * 5, compress=features, head_channels=2 * features, context=context)
    net = net.to(device).eval()
    fast = optimize_for_inference(net)
    crf = CRFNet(3, num_classes=2, window=window, iterations=iterations).to(device).eval()
    with torch.inference_mode():  # warm-up on a small volume (kernels, allocator)
        for model in (net, fast):
            x = torch.zeros(1, 4, 24, 24, 24, device=device)
            crf(model(x), x[:, :1])
    for tumour in tumours:
        image, truth, pred = synthetic_case(shape, tumour)
        t_clicks, (seeds, fg, bg) = _seconds(lambda: SimulateClicks().set_random_state(0)(pred, truth), device)
        img, label = torch.from_numpy(image).to(device), torch.from_numpy(pred).to(device)
        seeds = torch.as_tensor(seeds).to(device)
        for name, model in (("R-Net as trained", net), ("R-Net optimize_for_inference", fast)):
            result = refine(img, label, seeds, model, 2, crf, margin=margin)
            sec = result.seconds
            box = tuple(s.stop - s.start for s in result.box)
            print(
                f"(a) {tuple(shape)} on {device}, tumour {tumour:g} voxels across, {len(fg)} fg + {len(bg)} bg clicks "
                f"(simulated in {t_clicks:.2f} s), region {box} (margin {margin}) = "
                f"{np.prod(box) / np.prod(shape):.1%} of the volume, {name} ({features} ch/block, {context}): crop "
                f"{sec['crop']:.2f} s | geodesic maps x2 {sec['geodesic']:.2f} s | R-Net {sec['network']:.2f} s | "
                f"CRF-Net(fu) window {window}, {iterations} it {sec['crf']:.2f} s | paste {sec['paste']:.2f} s | "
                f"step total {sum(sec.values()):.2f} s"
            )
        totals.append(sum(sec.values()))
    return totals


def loaded_case(shape: Sequence[int], tumour: float, clicks: int) -> tuple[MetaTensor, np.ndarray, list[list[int]]]:
    """:func:`synthetic_case` as a FLAIR file loads: ``(1, *shape)`` intensities about 400 +- 100 in the brain and 0
    outside (1 mm voxels), with the automatic label ``(*shape)`` and ``clicks`` clicks on its errors, foreground
    (in the missed cap) and background (in the leak) in turn, each a voxel drawn at random from its error."""
    image, truth, pred = synthetic_case(shape, tumour)
    grid = np.meshgrid(*[np.arange(s, dtype=np.float32) - s / 2 for s in shape], indexing="ij")
    flair = np.where(_brain(grid, shape), 400 + 100 * image[0], 0).astype(np.float32)
    rng = np.random.default_rng(0)
    missed, leak = np.argwhere(truth[0] & ~pred[0]), np.argwhere(pred[0] & ~truth[0])
    fg = missed[rng.choice(len(missed), (clicks + 1) // 2, replace=False)]
    bg = leak[rng.choice(len(leak), clicks // 2, replace=False)]
    order = [p.tolist() for pair in zip(fg, bg) for p in pair] + ([fg[-1].tolist()] if clicks % 2 else [])
    return MetaTensor(torch.from_numpy(flair)[None]), pred[0], order


def bench_clicks(
    shapes: Sequence[Sequence[int]],
    clicks: Sequence[int],
    device: torch.device,
    features: int,
    context: str,
    window: int,
    iterations: int,
) -> list[dict]:
    """Successive clicks of one user through :func:`common.apps.deepigeos.refine_clicks` (the bundle's ``refine``:
    an ``optimize_for_inference`` R-Net of ``features`` channels per block, compressed to half, a head of twice as
    many; the bundle's defaults with ``--features 8``), without and with a :class:`RefinementCache`; returns one
    ``{"shape", "click", "cached", "seconds"}`` per click of ``clicks``."""
    timed: list[dict] = []
    net = rnet(3, features=(features,) * 5, compress=features // 2, head_channels=2 * features, context=context)
    net = optimize_for_inference(net.to(device).eval())
    crf = CRFNet(3, num_classes=2, window=window, iterations=iterations).to(device).eval()
    steps: list[Refinement] = []

    def recorded(*args: object, **kwargs: object) -> Refinement:
        steps.append(refine(*args, **kwargs))
        return steps[-1]

    for shape in shapes:
        tumour = 0.25 * shape[0]  # 60 voxels across at 240
        image, label, order = loaded_case(shape, tumour, max(clicks))
        image = image.to(device)
        label = torch.from_numpy(label).to(device)
        refine_clicks(image, label, order[:1], None, net, crf)  # warm-up (kernels, allocator)
        uncached: dict[int, torch.Tensor] = {}
        for cached in (False, True):
            cache = RefinementCache() if cached else None
            for k in range(1, max(clicks) + 1):
                steps.clear()
                wall0, cpu0 = time.perf_counter(), time.process_time()
                with mock.patch.object(interactive, "refine", recorded):  # to read the parts of the step
                    out = refine_clicks(image, label, order[:k:2], order[1:k:2], net, crf, cache=cache)
                wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
                if not cached:
                    uncached[k] = out
                if k not in clicks:
                    continue
                sec, box = steps[0].seconds, tuple(s.stop - s.start for s in steps[0].box)
                parts = " | ".join(f"{name} {t:.2f}" for name, t in sec.items())
                differ = f", {int((out != uncached[k]).sum())} voxels differ from without" if cached else ""
                print(
                    f"(e) {tuple(shape)} on {device}, click {k} ({(k + 1) // 2} fg + {k // 2} bg), "
                    f"{'with' if cached else 'without'} cache: {wall:.2f} s (process CPU {cpu:.2f} s) = {parts} | "
                    f"preprocessing and paste-back {wall - sum(sec.values()):.2f} s; box {box}{differ}"
                )
                timed.append({"shape": tuple(shape), "click": k, "cached": cached, "seconds": wall})
    return timed


def bench_geodesic(size: int, repeats: int) -> None:
    image, _, _ = synthetic_case((size,) * 3, seed=1)
    seeds = np.zeros((1, size, size, size), dtype=np.uint8)
    for i in range(3):
        seeds[(0, *(np.array([size // 3, size // 2, size // 2]) + 7 * i))] = 1
    img, sd = torch.from_numpy(image), torch.from_numpy(seeds)
    runs = [("GeodisTK CPU", "geodistk", torch.device("cpu"))]
    if has_fastgeodis:
        runs.append(("FastGeodis CPU", "fastgeodis", torch.device("cpu")))
        if torch.cuda.is_available():
            runs.append(("FastGeodis CUDA", "fastgeodis", torch.device("cuda")))
    cells = []
    for name, backend, device in runs:
        a, b = img.to(device), sd.to(device)
        geodesic_map(a, b, backend=backend)  # warm-up
        times = [_seconds(lambda: geodesic_map(a, b, backend=backend), device)[0] for _ in range(repeats)]
        cells.append(f"{name} {statistics.median(times):.2f} s [{min(times):.2f}-{max(times):.2f}]")
    if not has_fastgeodis:
        cells.append("FastGeodis not installed")
    elif not torch.cuda.is_available():
        cells.append("FastGeodis CUDA: no GPU here")
    print(
        f"(b) geodesic map {size}^3, lambda 1, converged (tolerance 1e-3 of the map sum), median of {repeats}: "
        + " | ".join(cells)
    )


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field))


def _reset_peak_memory(device: torch.device) -> float:
    """Start a new peak (of the CUDA allocator, else of the resident size); returns the baseline to subtract."""
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        return float(torch.cuda.memory_allocated())
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # resets the peak resident size (VmHWM) to the current one
    return float(_status_kib("VmRSS"))


def _peak_gib(device: torch.device, base: float) -> float:
    if device.type == "cuda":
        return (torch.cuda.max_memory_allocated() - base) / 2**30
    return (_status_kib("VmHWM") - base) / 2**20


def _crf_child(
    size: int, window: int, iterations: int, checkpoint: bool, device_name: str, threads: int
) -> dict[str, float]:
    """Runs in a fresh process so that peak memory belongs to this configuration alone."""
    torch.set_num_threads(threads)
    device = torch.device(device_name)
    torch.manual_seed(0)
    crf = CRFNet(3, num_classes=2, window=window, iterations=iterations, checkpoint=checkpoint).to(device)
    small = torch.randn(1, 2, 16, 16, 16, device=device, requires_grad=True)
    crf(small, small[:, :1].detach())[:, 1].sum().backward()  # warm-up
    logits = torch.randn(1, 2, size, size, size, device=device, requires_grad=True)
    feats = torch.randn(1, 1, size, size, size, device=device)
    base = _reset_peak_memory(device)
    t_fwd, q = _seconds(lambda: crf(logits, feats), device)
    t_bwd, _ = _seconds(lambda: q[:, 1].sum().backward(), device)
    peak = _peak_gib(device, base)
    return {"fwd": t_fwd, "bwd": t_bwd, "peak_gib": peak, "offsets": 2 * len(crf.half_offsets)}


def _run_child(
    ctx: mp.context.BaseContext, fn: Callable[..., dict[str, float]], args: tuple, env: dict[str, str]
) -> dict[str, float]:
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)  # read by the child's C library at start-up
    try:
        with ctx.Pool(1) as pool:
            return pool.apply(fn, args)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k)
            else:
                os.environ[k] = v


def bench_crf(size: int, windows: Sequence[int], iterations: int, device: torch.device) -> None:
    """CPU memory twice: with glibc's default allocator settings, whose dynamic mmap threshold keeps freed blocks
    of the Pairwise-Net's chunked activations resident, and with ``MALLOC_MMAP_THRESHOLD_=65536``, which returns
    them at once (close to the live tensors)."""
    configs = [(w, True) for w in windows] + [(min(windows), False)]
    ctx = mp.get_context("spawn")
    for window, checkpoint in configs:
        args = (size, window, iterations, checkpoint, str(device), torch.get_num_threads())
        r = _run_child(ctx, _crf_child, args, {})
        if device.type == "cuda":
            mem = f"peak GPU memory {r['peak_gib']:.2f} GiB"
        else:
            tuned = _run_child(ctx, _crf_child, args, {"MALLOC_MMAP_THRESHOLD_": "65536"})["peak_gib"]
            mem = f"peak RSS above inputs {r['peak_gib']:.2f} GiB (glibc default), {tuned:.2f} GiB (mmap threshold 64K)"
        print(
            f"(c) CRF-Net {size}^3 on {device}, window {window} ({r['offsets']} neighbours), {iterations} it, "
            f"checkpoint {checkpoint}: fwd {r['fwd']:.2f} s, bwd {r['bwd']:.2f} s, "
            f"fwd+bwd {r['fwd'] + r['bwd']:.2f} s, {mem}"
        )


def _pnet_child(size: int, context: str, features: int, device_name: str, threads: int) -> dict[str, float]:
    """Runs in a fresh process so that peak memory belongs to this configuration alone."""
    torch.set_num_threads(threads)
    device = torch.device(device_name)
    torch.manual_seed(0)
    net = PNet(3, features=(features,) * 5, compress=features, head_channels=2 * features, context=context)
    net = net.to(device).train()
    small = torch.randn(1, 1, 16, 16, 16, device=device)
    net(small).sum().backward()  # warm-up
    net.zero_grad(set_to_none=True)
    x = torch.randn(1, 1, size, size, size, device=device)
    target = (x[:, 0] > 1).long()
    base = _reset_peak_memory(device)
    cpu0 = time.process_time()
    t_fwd, logits = _seconds(lambda: net(x), device)
    t_bwd, _ = _seconds(lambda: F.cross_entropy(logits, target).backward(), device)
    cpu = time.process_time() - cpu0
    peak = _peak_gib(device, base)
    params = sum(p.numel() for p in net.parameters())
    return {"fwd": t_fwd, "bwd": t_bwd, "cpu": cpu, "peak_gib": peak, "params": params}


def bench_pnet(size: int, features: int, device: torch.device) -> None:
    ctx = mp.get_context("spawn")
    for context in ("3d", "2.5d"):
        r = _run_child(ctx, _pnet_child, (size, context, features, str(device), torch.get_num_threads()), {})
        mem = "peak GPU memory" if device.type == "cuda" else "peak RSS above the inputs"
        print(
            f"(d) P-Net 3D, context {context}, {features} ch/block: {int(r['params']):,} parameters; training-mode "
            f"forward + backward of (1, 1, {size}, {size}, {size}) on {device}: fwd {r['fwd']:.2f} s, bwd "
            f"{r['bwd']:.2f} s, fwd+bwd {r['fwd'] + r['bwd']:.2f} s (process CPU time {r['cpu']:.1f} s), {mem} "
            f"{r['peak_gib']:.2f} GiB"
        )


def main(
    volume: Sequence[int] = (240, 240, 155),
    tumours: Sequence[float] = (30, 60, 90),
    margin: int = 16,
    geodesic_size: int = 128,
    crf_size: int = 96,
    crf_windows: Sequence[int] = (3, 5),
    crf_iterations: int = 5,
    refine_window: int = 3,
    features: int = 16,
    context: str = "3d",
    pnet_size: int = 96,
    repeats: int = 3,
    device: str = "auto",
    parts: str = "abcd",
    threads: int = 0,
    click_volumes: Sequence[Sequence[int]] = ((64, 64, 48), (240, 240, 155)),
    clicks: Sequence[int] = (1, 2, 5),
) -> None:
    if threads:
        torch.set_num_threads(threads)
    dev = torch.device(
        "cuda" if device == "auto" and torch.cuda.is_available() else "cpu" if device == "auto" else device
    )
    gpu = torch.cuda.get_device_name(0) if dev.type == "cuda" else "none"
    print(
        f"# {datetime.date.today()} | {platform.processor() or platform.machine()}, {torch.get_num_threads()} "
        f"threads, GPU {gpu} | torch {torch.__version__}, MONAI {monai.__version__}, FastGeodis "
        f"{'yes' if has_fastgeodis else 'no'} | synthetic data, untrained weights"
    )
    if "a" in parts:
        bench_refinement(volume, tumours, margin, dev, features, context, refine_window, crf_iterations)
    if "b" in parts:
        bench_geodesic(geodesic_size, repeats)
    if "c" in parts:
        bench_crf(crf_size, crf_windows, crf_iterations, dev)
    if "d" in parts:
        bench_pnet(pnet_size, features, dev)
    if "e" in parts:
        bench_clicks(click_volumes, clicks, dev, features, context, refine_window, crf_iterations)


if __name__ == "__main__":
    fire.Fire(main)
