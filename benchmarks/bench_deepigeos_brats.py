"""Peak memory and time of one training iteration of each deepigeos_brats stage, built from the bundle's configs.

For each stage (P-Net; P-Net + CRF-Net(f); R-Net; R-Net + CRF-Net(fu)) the stage's ``network_def``, loss and optimiser
are parsed from ``train.json`` merged with the stage's override file (and any ``--overrides``), and one iteration runs
on a random batch of the stage's training shape: ``batch_size * samples_per_case`` patches ``(1, *patch_size)`` for the
P-Net stages, one R-Net box ``(4, *box)`` (plus its clicks for CRF-Net(fu)) for the R-Net stages. Forward, Dice-CE
loss, backward and the optimiser step run in a fresh process per stage (bfloat16 autocast on CUDA, as the bundle
trains there). Printed: seconds of the iteration, and the peak memory it took: on CUDA ``max_memory_allocated``, on
the CPU the rise of the process's peak resident memory (``ru_maxrss``) over what it held before the iteration
(network, optimiser state and inputs already allocated).

Usage: python benchmarks/bench_deepigeos_brats.py [--overrides '{"features": [16,16,16,16,16]}'] [--box "[64,72,56]"]
    [--device auto] [--threads 1] [--mmap_threshold 65536]
(``--mmap_threshold``: glibc's ``MALLOC_MMAP_THRESHOLD_`` for the CPU runs, 0 to leave glibc's default: with the
default, freed blocks of the chunked Pairwise-Net stay resident and the CRF stages' peak reads several times higher.)
"""

from __future__ import annotations

import datetime
import json
import multiprocessing as mp
import os
import platform
import resource
import time
from collections.abc import Sequence
from pathlib import Path

import fire
import torch

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "bundles" / "deepigeos_brats" / "configs"
STAGES = {
    "P-Net": ["train.json"],
    "P-Net + CRF-Net(f)": ["train.json", "train_pnet_crf.json"],
    "R-Net": ["train.json", "train_rnet.json"],
    "R-Net + CRF-Net(fu)": ["train.json", "train_rnet.json", "train_rnet_crf.json"],
}


def _one_iteration(stage: str, overrides: dict, box: Sequence[int], device: str, threads: int, queue: mp.Queue) -> None:
    from monai.bundle import ConfigParser

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    parser = ConfigParser()
    parser.read_config([str(CONFIGS / f) for f in STAGES[stage]])
    parser.update({"device": f"$torch.device('{device}')", "bundle_root": str(REPO / "bundles" / "deepigeos_brats")})
    parser.update(overrides)
    net = parser.get_parsed_content("network_def").to(device).train()
    loss_fn = parser.get_parsed_content("loss")
    optimizer = torch.optim.Adam(net.parameters(), lr=float(parser.get_parsed_content("learning_rate")))
    if stage.startswith("P-Net"):
        n = int(parser.get_parsed_content("batch_size")) * int(parser.get_parsed_content("samples_per_case"))
        shape = (n, 1, *parser.get_parsed_content("patch_size"))
    else:
        shape = (1, 4, *box)
    x = torch.randn(*shape, device=device)
    y = torch.randint(0, 2, (shape[0], 1, *shape[2:]), device=device).float()
    kwargs = {}
    if stage == "R-Net + CRF-Net(fu)":
        seeds = torch.zeros(shape[0], 2, *shape[2:], device=device)
        seeds[:, 1, shape[2] // 2, shape[3] // 2, shape[4] // 2] = 1
        kwargs["seeds"] = seeds
    cuda = device.startswith("cuda")
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda):
        loss = loss_fn(net(x, **kwargs), y)
    loss.backward()
    optimizer.step()
    if cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    if cuda:
        peak = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024  # kB -> MiB (Linux)
    params = sum(p.numel() for p in net.parameters())
    queue.put((stage, list(shape), params, seconds, peak))


def main(
    overrides: str | dict = "{}",
    box: Sequence[int] = (56, 72, 56),
    device: str = "auto",
    threads: int = 1,
    mmap_threshold: int = 65536,
) -> None:
    """Run one iteration of every stage in its own process and print the table."""
    overrides = json.loads(overrides) if isinstance(overrides, str) else dict(overrides)
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if mmap_threshold and not device.startswith("cuda"):
        os.environ["MALLOC_MMAP_THRESHOLD_"] = str(mmap_threshold)  # read by glibc when the child process starts
    ctx = mp.get_context("spawn")
    rows = []
    for stage in STAGES:
        queue = ctx.Queue()
        proc = ctx.Process(target=_one_iteration, args=(stage, overrides, list(box), device, threads, queue))
        proc.start()
        proc.join()
        if proc.exitcode != 0:
            raise RuntimeError(f"{stage}: the benchmark process failed (exit code {proc.exitcode})")
        rows.append(queue.get())
    where = torch.cuda.get_device_name(0) if device.startswith("cuda") else f"{platform.processor() or 'CPU'}"
    day = datetime.date.today()
    print(f"deepigeos_brats, one training iteration per stage; {day}, torch {torch.__version__}, {where}")
    print(f"device {device}, {threads} thread(s), overrides {overrides or 'none'}")
    memory = "peak CUDA memory (MiB)" if device.startswith("cuda") else "peak resident memory added (MiB)"
    print(f"| stage | input (B, C, *S) | parameters | seconds | {memory} |")
    print("|---|---|---|---|---|")
    for stage, shape, params, seconds, peak in rows:
        print(f"| {stage} | {tuple(shape)} | {params:,} | {seconds:.2f} | {peak:.0f} |")


if __name__ == "__main__":
    fire.Fire(main)
