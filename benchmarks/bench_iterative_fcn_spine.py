"""Benchmarks of the iterative FCN traversal (bundles/iterative_fcn_spine); prints measured figures.

(a) whole-volume segmentation: the bundle's ``inference.json`` (plus ``--configs``, e.g. ``configs/demo.json``, the
    settings its weights were trained with) on every case of its test split, after loading and resampling: wall
    seconds of the traversal, its network evaluations (steps) and why it ended, per case.
(b) one network evaluation of the paper-sized network (64 channels, 4 levels, a ``(1, 2, 128, 128, 128)`` patch,
    untrained weights) in eval mode: seconds (median of ``--repeats``), to scale (a) to the paper's settings
    (seconds per volume = steps x seconds per step).

CUDA is used when available (``--device cpu`` to force the CPU).

Usage: python benchmarks/bench_iterative_fcn_spine.py [--configs "['bundles/iterative_fcn_spine/configs/demo.json']"]
    [--dataset_dir data/csi2014] [--patch 128] [--features 64] [--repeats 3] [--device auto] [--threads 0] [--parts ab]
"""

from __future__ import annotations

import datetime
import platform
import statistics
import time
from collections.abc import Sequence

import fire
import torch
from monai.bundle import ConfigParser

from common.networks.nets import IterativeFCN

ROOT = "bundles/iterative_fcn_spine"


def whole_volumes(configs: Sequence[str], dataset_dir: str, device: torch.device) -> None:
    parser = ConfigParser()
    parser.read_config([f"{ROOT}/configs/inference.json", *configs])
    parser.update({"bundle_root": ROOT, "dataset_dir": dataset_dir, "device": device})
    net = parser.get_parsed_content("network")
    loader = parser.get_parsed_content("handlers#0")
    loader.load_dict["model"].load_state_dict(
        torch.load(loader.load_path, map_location=device, weights_only=True), strict=True
    )
    net.eval()
    inferer = parser.get_parsed_content("inferer")
    pre = parser.get_parsed_content("preprocessing")
    print("(a) whole-volume traversal, weights", loader.load_path, "settings", parser.get_parsed_content("settings"))
    for item in parser.get_parsed_content("infer_items"):
        image = pre(item)["image"][None].to(device)
        inferer(image, net)
        t = inferer.last
        print(
            f"  {item['case']}: volume {tuple(image.shape[2:])} at 1 mm, {t.seconds:.2f} s, {t.steps} steps "
            f"({t.seconds / max(t.steps, 1) * 1000:.0f} ms/step), {len(t.instances)} vertebrae, ended: {t.reason}"
        )


def one_step(patch: int, features: int, repeats: int, device: torch.device) -> float:
    """Median seconds of one network evaluation (after a warm-up); printed and returned."""
    net = IterativeFCN(features=features).to(device).eval()
    x = torch.randn(1, 2, patch, patch, patch, device=device)
    times = []
    with torch.no_grad():
        for _ in range(repeats + 1):
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            net(x)
            if device.type == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - start)
    times = times[1:]  # the first run warms up
    print(
        f"(b) one network evaluation, {features} channels, patch {patch}^3: median {statistics.median(times):.2f} s "
        f"(min {min(times):.2f}, max {max(times):.2f}, {repeats} repeats)"
    )
    return statistics.median(times)


def main(
    configs: Sequence[str] = (f"{ROOT}/configs/demo.json",),
    dataset_dir: str = "data/csi2014",
    patch: int = 128,
    features: int = 64,
    repeats: int = 3,
    device: str = "auto",
    threads: int = 0,
    parts: str = "ab",
) -> None:
    dev = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device)
    if threads:
        torch.set_num_threads(threads)
    print(
        f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, "
        f"{platform.processor() or platform.machine()}, device {dev}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads"
    )
    if "a" in parts:
        whole_volumes(list(configs), dataset_dir, dev)
    if "b" in parts:
        one_step(patch, features, repeats, dev)


if __name__ == "__main__":
    fire.Fire(main)
