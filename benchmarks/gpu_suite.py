"""Every GPU measurement the model cards and the README name, in one run on one GPU (about 8 minutes), written as one
markdown table: device, driver, each figure beside its goal, pass or fail.

The measurements are the benchmark scripts' own functions, at the sizes the cards quote:

- IGS: a full x4 search over 1,900 random slices of 256x256 with the bundles' 32-feature U-Net
  (``bench_kspace_igs.bench_search``; goal: under 60 s on one H100);
- DeepIGeoS: one refinement step on a 240x240x155 volume per tumour size (``bench_deepigeos.bench_refinement``,
  8 channels per block as the bundle; goal: under 1 s), and successive clicks through the served ``refine_clicks``
  with the refinement cache (``bench_deepigeos.bench_clicks``; goal: every click under 0.5 s);
- iterative_fcn_spine: one evaluation of the paper-sized network on a 128^3 patch
  (``bench_iterative_fcn_spine.one_step``), and a whole CT through ``inference.json`` below (goal: under 10 s);
- unet_lgg: the bundle's training pipeline (AMP, cached dataset) against the seed-style loop, images/s
  (``bench_unet_lgg``; goal: at least 3x);
- every bundle's default configs at the real data's size (``bench_real_size``: seconds per training iteration,
  peak GPU memory under the bundle's AMP, one whole-case inference; goal: it fits), with what is left of the time
  budget (``--budget`` seconds for the whole run) shared among the bundles.

``--dry-run`` runs the same code paths tiny on the CPU in a minute or two (the tests run it), so the script works
the first time a GPU is there; its figures say nothing about speed and its goals are not judged.

Usage: benchmarks/gpu_suite.sh [--out gpu_suite.md] [--budget 480] [--dry_run] [--data DIR]
"""

from __future__ import annotations

import datetime
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import fire
import monai
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_deepigeos  # noqa: E402
import bench_iterative_fcn_spine  # noqa: E402
import bench_kspace_igs  # noqa: E402
import bench_real_size  # noqa: E402
import bench_unet_lgg  # noqa: E402

from common.data import lgg_slices  # noqa: E402


@dataclass(frozen=True)
class Row:
    """One line of the table: what was measured, the figure, the goal, and whether the figure meets it (None: no
    goal, or a dry run)."""

    measurement: str
    figure: str
    goal: str = "-"
    passed: bool | None = None


@dataclass(frozen=True)
class Sizes:
    """The sizes of one run: the cards' (:data:`FULL`) or the dry run's (:data:`TINY`)."""

    igs_size: int
    igs_slices: int
    igs_features: int
    igs_batch: int
    volume: tuple[int, int, int]
    tumours: tuple[float, ...]
    margin: int
    deepigeos_features: int
    clicks: tuple[int, ...]
    spine_patch: int
    spine_features: int
    lgg_size: int
    lgg_depth: int
    lgg_features: int
    lgg_epochs: int
    lgg_workers: int
    real_size_iterations: int


FULL = Sizes(256, 1900, 32, 128, (240, 240, 155), (30, 60, 90), 16, 8, (1, 2, 5), 128, 64, 256, 4, 32, 4, 4, 3)
TINY = Sizes(32, 8, 4, 4, (40, 40, 32), (20,), 4, 4, (1, 2), 16, 4, 32, 2, 4, 2, 0, 1)


def igs_search(s: Sizes, device: torch.device, work: Path) -> list[Row]:
    seconds = bench_kspace_igs.bench_search(s.igs_size, s.igs_slices, device, s.igs_features, s.igs_batch, str(work))
    what = f"IGS x4 search, {s.igs_slices} slices {s.igs_size}x{s.igs_size}, U-Net {s.igs_features} features"
    return [Row(what, f"{seconds:.1f} s", "< 60 s", seconds < 60)]


def deepigeos(s: Sizes, device: torch.device, work: Path) -> list[Row]:
    steps = bench_deepigeos.bench_refinement(s.volume, s.tumours, s.margin, device, s.deepigeos_features, "3d", 3, 5)
    clicks = bench_deepigeos.bench_clicks([s.volume], s.clicks, device, s.deepigeos_features, "3d", 3, 5)
    size = "x".join(map(str, s.volume))
    rows = [
        Row(f"DeepIGeoS refinement step, {size}, tumour {t:g} voxels across", f"{sec:.2f} s", "< 1 s", sec < 1)
        for t, sec in zip(s.tumours, steps)
    ]
    return rows + [
        Row(
            f"DeepIGeoS click {c['click']} ({'with' if c['cached'] else 'without'} refinement cache), {size}",
            f"{c['seconds']:.2f} s",
            "< 0.5 s" if c["cached"] else "-",
            c["seconds"] < 0.5 if c["cached"] else None,
        )
        for c in clicks
    ]


def spine_step(s: Sizes, device: torch.device, work: Path) -> list[Row]:
    seconds = bench_iterative_fcn_spine.one_step(s.spine_patch, s.spine_features, 3, device)
    what = f"iterative FCN, one evaluation, {s.spine_features} channels, {s.spine_patch}^3 patch"
    return [Row(what, f"{seconds * 1000:.0f} ms")]


def lgg_throughput(s: Sizes, device: torch.device, work: Path) -> list[Row]:
    data = bench_real_size.write_data(["unet_lgg"], work / "data", tiny=s is TINY)["unet_lgg"]
    items = lgg_slices(data, "train", image_size=s.lgg_size)
    batch = 8 if s is FULL else 2
    seed = bench_unet_lgg.bench_seed_style(items, s.lgg_epochs, batch, s.lgg_depth, s.lgg_features, device)
    bundle, n = bench_unet_lgg.bench_bundle(
        Path(data),
        s.lgg_size,
        s.lgg_epochs,
        batch,
        s.lgg_workers,
        s.lgg_depth,
        s.lgg_features,
        device,
        work / "lgg_models",
    )
    what = f"unet_lgg training, bundle pipeline / seed-style loop ({n} slices {s.lgg_size}x{s.lgg_size})"
    return [Row(what, f"{bundle:.0f} / {seed:.0f} images/s = {bundle / seed:.2f}x", ">= 3x", bundle / seed >= 3)]


def real_size(s: Sizes, device: torch.device, work: Path, deadline: float) -> list[Row]:
    """Every bundle through ``bench_real_size``, each given an equal share of the time left before ``deadline``."""
    bundles = list(bench_real_size.SPECS)
    dirs = bench_real_size.write_data(bundles, work / "data", tiny=s is TINY)
    memory = torch.cuda.get_device_properties(device).total_memory / 2**30 if device.type == "cuda" else None
    rows = []
    for k, bundle in enumerate(bundles):
        timeout = max(10.0, (deadline - time.monotonic()) / (len(bundles) - k))
        results = bench_real_size.measure_bundle(
            bundle, dirs[bundle], work / bundle, s.real_size_iterations, str(device), timeout=timeout, tiny=s is TINY
        )
        for phase, r in results.items():
            what = f"{bundle} {phase} at real size"
            if r["status"] != "ok":
                rows.append(Row(what, r["status"], "fits", False))
                continue
            mem = r.get("peak_cuda_gib", r["peak_rss_gib"])
            if phase == "inference":
                steps = f", {r['steps']} steps (untrained)" if "steps" in r else ""
                figure = f"{'x'.join(map(str, r['case']))}: {r['s_per_case']:.2f} s{steps}, {mem:.2f} GiB"
                goal = "< 10 s" if bundle == "iterative_fcn_spine" else "fits"
                ok = r["s_per_case"] < 10 if bundle == "iterative_fcn_spine" else True
            else:
                figure = f"{tuple(r['batch'])}, AMP {r['amp']}: {r['s_per_it']:.3f} s/it, {mem:.2f} GiB"
                goal = f"fits in {memory:.0f} GiB" if memory else "fits"
                ok = memory is None or mem < memory
            rows.append(Row(what, figure, goal, ok))
    return rows


def driver() -> str:
    """The NVIDIA driver version (nvidia-smi), or why there is none."""
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"no nvidia-smi ({type(e).__name__})"
    return out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else "unknown"


def render(rows: Sequence[Row], device: torch.device, seconds: float, dry_run: bool) -> str:
    """The markdown table with its head: device, driver, software, date, wall time."""
    name = (
        torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({bench_real_size.device_line(device)})"
    )
    cuda = f", CUDA {torch.version.cuda}" if device.type == "cuda" else ""
    head = [
        f"# GPU suite{' (dry run: tiny sizes on the CPU; goals not judged)' if dry_run else ''}",
        "",
        f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC; device {name}; driver {driver()}{cuda}; "
        f"torch {torch.__version__}, MONAI {monai.__version__}; {seconds:.0f} s in all; synthetic data, untrained "
        "weights.",
        "",
        "| measurement | figure | goal | pass |",
        "|---|---|---|---|",
    ]
    mark = {True: "pass", False: "**fail**", None: "-"}
    return "\n".join(
        head + [f"| {r.measurement} | {r.figure} | {r.goal} | {mark[None if dry_run else r.passed]} |" for r in rows]
    )


def run(out: str | Path = "gpu_suite.md", budget: float = 480.0, dry_run: bool = False, data: str | None = None) -> str:
    """Run every measurement (``dry_run``: tiny, on the CPU), write the table to ``out`` and return it. A part that
    raises is a row of its own (the error), and the rest still run. Without ``--dry_run`` a GPU is required."""
    if not dry_run and not torch.cuda.is_available():
        raise RuntimeError("gpu_suite: expected a CUDA device, found none (use --dry_run to check the script on a CPU)")
    device = torch.device("cpu" if dry_run else "cuda")
    sizes = TINY if dry_run else FULL
    start = time.monotonic()
    parts: list[tuple[str, Callable[[Sizes, torch.device, Path], list[Row]]]] = [
        ("IGS search", igs_search),
        ("DeepIGeoS", deepigeos),
        ("iterative FCN step", spine_step),
        ("unet_lgg throughput", lgg_throughput),
        ("real size", lambda s, d, w: real_size(s, d, w, start + budget)),
    ]
    rows: list[Row] = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(data or tmp)
        for name, part in parts:
            try:
                rows += part(sizes, device, work)
            except Exception as e:  # noqa: BLE001 -- the table says which part failed, the others still run
                rows.append(Row(name, f"failed: {type(e).__name__}: {str(e).splitlines()[0][:200]}", "-", False))
    text = render(rows, device, time.monotonic() - start, dry_run)
    Path(out).write_text(text + "\n")
    print(text)
    return text


def main(out: str = "gpu_suite.md", budget: float = 480.0, dry_run: bool = False, data: str | None = None) -> None:
    """See :func:`run`."""
    run(out, budget, dry_run, data)


if __name__ == "__main__":
    fire.Fire(main)
