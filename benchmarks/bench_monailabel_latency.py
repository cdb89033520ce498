"""How the MONAI Label app (apps/monailabel) answers other calls while a long inference runs; prints measured figures.

A real ``monailabel start_server`` on 127.0.0.1 serves a copy of ``deepigeos_brats`` with untrained weights
(:func:`bench_monailabel_memory.untrained_deepigeos`) and a datastore with one synthetic BraTS FLAIR of
``--brats_shape``. For each of (a) the
automatic DeepIGeoS segmentation and (b) a DeepIGeoS refinement with ``--clicks`` foreground clicks (after the
automatic label was made), one client sends the request while another polls ``GET /info/`` and ``GET /train/`` (the
training status 3D Slicer polls) every ``--interval`` seconds; printed: the inference's seconds, and per polled call
the number of answers during the inference, their median and largest latency.

Usage: python benchmarks/bench_monailabel_latency.py [--brats_shape "[240,240,155]"] [--clicks 3] [--interval 0.25]
    [--threads 1]
"""

from __future__ import annotations

import datetime
import json
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import fire
import monai
import numpy as np
import requests
import torch
from bench_monailabel_memory import REPO, synthetic_flair, untrained_deepigeos

sys.path.insert(0, str(REPO))  # the app is a folder of the repository, not part of the installed package
from apps.monailabel.lib.server import start_server, stop_server  # noqa: E402


def _during(url: str, model: str, image: str, params: dict, interval: float) -> tuple[float, dict[str, list[float]]]:
    """Send one inference request and poll ``/info/`` and ``/train/`` until it has answered -> (its seconds,
    {path: latencies of the polled calls})."""
    latencies: dict[str, list[float]] = {"/info/": [], "/train/": []}
    done = threading.Event()

    def poll() -> None:
        while not done.is_set():
            for path, seconds in latencies.items():
                t0 = time.perf_counter()
                requests.get(f"{url}{path}", timeout=600)  # /train/ answers 404 while no training has run
                seconds.append(time.perf_counter() - t0)
            done.wait(interval)

    poller = threading.Thread(target=poll)
    t0 = time.perf_counter()
    poller.start()
    r = requests.post(
        f"{url}/infer/{model}", params={"image": image, "output": "image"}, data={"params": json.dumps(params)}
    )
    seconds = time.perf_counter() - t0
    done.set()
    poller.join()
    if r.status_code != 200:
        raise RuntimeError(f"{model} {params}: HTTP {r.status_code} {r.text[:1000]}")
    return seconds, latencies


def main(
    brats_shape: Sequence[int] = (240, 240, 155), clicks: int = 3, interval: float = 0.25, threads: int = 1
) -> None:
    print(
        f"# {datetime.date.today()} | server on cpu, OMP_NUM_THREADS {threads} | torch {torch.__version__}, "
        f"MONAI {monai.__version__} | synthetic BraTS FLAIR {tuple(brats_shape)}, untrained weights"
    )
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        flair, tumour = synthetic_flair(tmp, brats_shape)
        (tmp / "studies").mkdir()
        shutil.copy(flair.get_filename(), tmp / "studies" / "brats_case.nii.gz")
        conf = {"bundles_dir": str(untrained_deepigeos(tmp / "bundles")), "device": "cpu", "bundles": "deepigeos_brats"}
        url, proc = start_server(tmp / "studies", conf, tmp / "server.log", threads=threads)
        try:
            inside = np.argwhere(tumour)
            points = inside[np.linspace(0, len(inside) - 1, clicks).astype(int)].tolist()  # spread over the tumour
            cases = [
                ("(a) automatic segmentation", "deepigeos_brats", {}),
                ("(b) refinement", "deepigeos_brats_refine", {"reset": True}),  # the automatic label, kept
                ("(b) refinement", "deepigeos_brats_refine", {"foreground": points}),
            ]
            for name, model, params in cases:
                seconds, latencies = _during(url, model, "brats_case", params, interval)
                polled = ", ".join(
                    f"GET {path} {len(ls)} answers, median {statistics.median(ls):.3f} s, max {max(ls):.3f} s"
                    for path, ls in latencies.items()
                )
                print(f"{name} {model} {params}: {seconds:.2f} s; during it: {polled}")
        finally:
            stop_server(proc)


if __name__ == "__main__":
    fire.Fire(main)
