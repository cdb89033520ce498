"""Every bundle's default configs at the real data set's size: seconds per training iteration, peak memory, and one
whole-case inference; prints one markdown table.

For each bundle a synthetic copy of its data set is written at the real size (:data:`SPECS`: ACDC patients resized
to the bundle's 256x256, BraTS 240x240x155, kaggle_3m 256x256x3 slices, ATLAS R2.0 197x233x189 at 1 mm, CSI 2014-like
spine CT of about 170x170x450 mm resampled to 1 mm; 5 training cases, the fewest the 5-fold splits take, and one to
infer), then, in a fresh process per bundle:

- training, per stage (``train.json``, and the stage files merged on it, e.g. ``zoom_out.json``): the bundle's own
  ``train#trainer`` as ``monai.bundle.ConfigParser`` builds it from the default configs (network, loss, optimizer, data
  pipeline, AMP where the bundle uses it), its handlers left out (no validation, checkpoints or logging), for
  ``--iterations`` iterations after one warm-up: median wall and process CPU seconds per iteration of the step (forward,
  loss, backward, optimizer) and wall seconds of fetching the batch, the batch shape, the bytes the ``CacheDataset``
  holds per item, and from the real data set's training items per epoch (:attr:`BundleSpec.train_items`) and the
  config's epochs an estimate of the whole run on this device (measured seconds per iteration x iterations; data loading
  overlapped by workers), and the FLOP of an iteration (``torch.utils.flop_counter`` on the meta device: a backward
  counted as twice a forward) for an estimate on a GPU at an assumed sustained ``--gpu_tflops`` (an estimate, not a
  measurement);
- inference: the bundle's ``inference.json`` evaluator on one whole case with untrained weights (its checkpoint
  loader left out): seconds for the case (network, postprocessing, writing) and for loading it, and the traversal's
  steps where the inferer keeps them (iterative_fcn_spine: an untrained network, so the step count is not a trained
  one's).

Each phase also records its process CPU seconds (``cpu_s`` in :func:`measure_bundle`'s results: less sensitive to other
jobs on shared cores than wall time). Peak memory: the process's peak resident size (VmHWM, reset between phases) on the
CPU; on CUDA ``torch.cuda.max_memory_allocated`` (reset per phase) beside it. On the CPU each bundle's process runs
under an address-space limit (``--memory_gib``, at most what the machine has available), so a default that does not fit
is reported as such ("does not fit") instead of being killed or taking the machine down; a process that runs past
``--timeout`` seconds is reported as timed out with what it measured until then.

Extra config files per bundle (``--overrides``) are merged last (after the measurement's own settings) on every
training stage (they may set ids that exist in ``train.json`` only, as ``train#trainer#...``), e.g.
``--overrides "{'iterative_fcn_spine': ['bundles/iterative_fcn_spine/configs/low_memory.json']}"``. ``--tiny`` writes
tiny data and merges :attr:`BundleSpec.tiny` (small networks and patches): the same code paths in seconds on a CPU,
for tests and the GPU suite's dry run.

Usage: python benchmarks/bench_real_size.py [--bundles "[unet_lgg,igs_acdc,...]" (all)] [--iterations 3]
    [--device auto] [--overrides "{}"] [--memory_gib 24] [--timeout 1800] [--data DIR (a temporary folder)]
    [--threads 0] [--tiny] [--noinfer (training only)] [--gpu_tflops 100 (assumed, for the GPU estimate)]
"""

from __future__ import annotations

import copy
import datetime
import gc
import json
import math
import multiprocessing as mp
import os
import platform
import re
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import fire
import torch
from ignite.engine import Events
from monai.bundle import ConfigParser
from monai.data import CacheDataset
from torch.utils.flop_counter import FlopCounterMode

from common.synthetic.acdc import write_synthetic_acdc
from common.synthetic.atlas import write_synthetic_atlas
from common.synthetic.brats import TRAINING_FOLDERS, write_synthetic_brats
from common.synthetic.lgg import write_synthetic_lgg
from common.synthetic.spine import write_synthetic_spine

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_deepigeos import _peak_gib, _reset_peak_memory  # noqa: E402

CASES = 5  # the fewest cases the bundles' 5-fold splits take


def _write_lgg(out: Path, tiny: bool) -> Path:
    """kaggle_3m: 256x256x3 slices, 20-88 per patient as in the release (tiny: 32x32, 3-4)."""
    return write_synthetic_lgg(out, CASES, size=32 if tiny else 256, slices=(3, 4) if tiny else (20, 88))


def _write_acdc(out: Path, tiny: bool) -> Path:
    """ACDC at its own size (about 200-250 px, 6-18 slices); the bundles resize slices to their ``image_size``."""
    return write_synthetic_acdc(out, n_training=CASES, n_testing=1)


def _write_brats(out: Path, tiny: bool) -> Path:
    """BraTS 2020 training folder, 240x240x155 at 1 mm (tiny: 32x32x24); uncompressed as widely used copies are."""
    write_synthetic_brats(out, CASES, shape=(32, 32, 24) if tiny else (240, 240, 155), n_validation=0, compress=False)
    return out / TRAINING_FOLDERS[2020]


def _write_atlas(out: Path, tiny: bool) -> Path:
    """ATLAS R2.0 on the 197x233x189 1 mm MNI grid (tiny: 8 mm, 25x29x24), one Testing subject to infer."""
    return write_synthetic_atlas(out, CASES, n_testing=1, voxel_size=8.0 if tiny else 1.0)


def _write_spine(out: Path, tiny: bool) -> Path:
    """CSI 2014-like CT: 170x170x300 voxels of about 1 x 1 x 1.5 mm (assumed real extent of a thoracolumbar scan,
    about 170 x 170 x 450 mm; vertebral bodies about 40 mm wide at ``scale`` 3), one test case (tiny: 24x24x40)."""
    shape, scale = ((24, 24, 40), 0.6) if tiny else ((170, 170, 300), 3.0)
    return write_synthetic_spine(out, n_training=CASES, n_testing=1, shape=shape, scale=scale)


WRITERS: dict[str, Callable[[Path, bool], Path]] = {
    "lgg": _write_lgg,
    "acdc": _write_acdc,
    "brats": _write_brats,
    "atlas": _write_atlas,
    "spine": _write_spine,
}


@dataclass(frozen=True)
class BundleSpec:
    """How one bundle is measured.

    ``dataset``: the key of its writer in :data:`WRITERS`; ``data_size``: the real data set's size, as printed;
    ``train_items``: training items (slices, cases, crops: what ``batch_size`` counts) per epoch on the real data set's
    default split, for the estimate of a whole run; ``stages``: training stage name -> config files (under the bundle's
    ``configs/``) merged on ``train.json`` ("": ``train.json`` alone); ``settings``: values set in every config because
    the measurement has no trained artefacts (a search's pattern, a previous stage's weights); ``tiny``: settings of the
    dry run."""

    dataset: str
    data_size: str
    train_items: int
    stages: Mapping[str, Sequence[str]] = field(default_factory=lambda: {"": ()})
    settings: Mapping[str, object] = field(default_factory=dict)
    tiny: Mapping[str, object] = field(default_factory=dict)


SPECS: dict[str, BundleSpec] = {
    "unet_lgg": BundleSpec(
        "lgg",
        "110 patients, 3,929 slices of 256x256x3",
        2515,  # 64 % of the slices: 4 of 5 folds, 20 % of them for validation
        tiny={"image_size": 32, "features": 4, "depth": 2, "batch_size": 2, "num_workers": 0},
    ),
    "igs_acdc": BundleSpec(
        "acdc",
        "100 training patients x 2 frames, about 1,900 slices resized to 256x256",
        1520,  # 4 of 5 folds
        settings={"pattern": "equispaced"},  # no searched pattern here; inference costs the same with any
        tiny={"image_size": 32, "unet_features": [4, 4, 4, 4, 4, 4], "batch_size": 4, "num_workers": 0},
    ),
    "igs_brats": BundleSpec(
        "brats",
        "369 cases of 4 x 240x240x155 (2020), 16 axial slices per case",
        3536,  # 3 of 5 folds (one test, one validation) x 16 slices
        settings={"pattern": "equispaced"},
        tiny={"unet_features": [4, 4, 4, 4, 4, 4], "slices_per_case": 2, "batch_size": 4, "num_workers": 0},
    ),
    "deepigeos_brats": BundleSpec(
        "brats",
        "369 cases of 240x240x155 (FLAIR, 2020)",
        221,  # 3 of 5 folds, one patch per case
        tiny={"features": [4] * 5, "compress": 2, "head_channels": 4, "crf_hidden": [4, 4], "patch_size": [16] * 3},
    ),
    "iterative_fcn_spine": BundleSpec(
        "spine",
        "CSI 2014: 10 training CT, about 170x170x450 at 1 mm (assumed)",
        8,  # training cases (fold 0 validates); a batch holds samples_per_case patches of each
        tiny={"features": 4, "patch_size": [16] * 3, "max_steps": 20, "min_voxels": 10},
    ),
    "resunet_zoom_atlas": BundleSpec(
        "atlas",
        "ATLAS R2.0: 655 training T1w of 197x233x189 at 1 mm",
        393,  # 3 of 5 folds, one crop per subject
        stages={"zoom-in": (), "zoom-out": ("zoom_out.json",)},
        settings={"init_weights": "$None"},  # zoom-out starts from zoom-in's weights, which do not exist here
        tiny={
            "features": [8, 8, 8, 8],
            "zoom_in_patch_size": [16] * 3,
            "zoom_out_patch_size": [16] * 3,
            "infer_roi_size": [16] * 3,
        },
    ),
}


def write_data(bundles: Sequence[str], root: str | Path, tiny: bool = False) -> dict[str, str]:
    """Write each data set the ``bundles`` need once under ``root`` (kept when already complete: a ``.done`` file);
    returns ``{bundle: dataset_dir}``."""
    unknown = sorted(set(bundles) - set(SPECS))
    if unknown:
        raise ValueError(f"bundles: expected names from {sorted(SPECS)}, found {unknown}")
    dirs = {}
    for dataset in sorted({SPECS[b].dataset for b in bundles}):
        out = Path(root) / dataset
        done = out / ".done"
        if done.is_file():
            dirs[dataset] = done.read_text()
            continue
        dirs[dataset] = str(WRITERS[dataset](out, tiny))
        done.write_text(dirs[dataset])
    return {b: dirs[SPECS[b].dataset] for b in bundles}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _parser(
    files: Sequence[str | Path], settings: Mapping[str, object], overrides: Sequence[str | Path] = ()
) -> ConfigParser:
    """``files`` merged in order, then ``settings``, then the ``overrides`` files (which win over both)."""
    parser = ConfigParser()
    parser.read_config([str(f) for f in files])
    parser.update(dict(settings))
    for f in overrides:
        parser.update(ConfigParser.load_config_file(str(f)))
    return parser


def _timer(engine, device: torch.device, start: Events, end: Events) -> tuple[list[float], list[float]]:
    """Wall and process CPU seconds between ``start`` and ``end`` of every iteration of ``engine`` (device
    synchronised); the CPU seconds, all threads of this process, are what a machine without other jobs would take
    with one thread."""
    times: list[float] = []
    cpu: list[float] = []
    t0 = [0.0, 0.0]

    def begin(_) -> None:
        _sync(device)
        t0[:] = time.perf_counter(), time.process_time()

    def finish(_) -> None:
        _sync(device)
        times.append(time.perf_counter() - t0[0])
        cpu.append(time.process_time() - t0[1])

    engine.add_event_handler(start, begin)
    engine.add_event_handler(end, finish)
    return times, cpu


def _batch_shape(engine) -> list[int]:
    """The shape of the image of every batch ``engine`` runs, as collated (read at ITERATION_STARTED; the engine
    replaces ``state.batch`` by the decollated items later)."""
    shapes: list[list[int]] = []
    engine.add_event_handler(Events.ITERATION_STARTED, lambda e: shapes.append(list(e.state.batch["image"].shape)))
    return shapes


def _forward_flop(network: torch.nn.Module, shape: Sequence[int]) -> float | None:
    """FLOP of one forward pass of ``network`` on an input of ``shape``, counted by ``torch.utils.flop_counter`` on
    a copy on the meta device (nothing is computed); None where an operation cannot run there."""
    try:
        net = copy.deepcopy(network).to("meta")
        with FlopCounterMode(display=False) as counter:
            net(torch.zeros(tuple(shape), device="meta"))
    except (RuntimeError, NotImplementedError, TypeError, ValueError):
        return None
    return float(counter.get_total_flops())


def _cached_mib(dataset: object) -> float | None:
    """MiB a ``CacheDataset`` holds per cached item (tensors and arrays), None for other datasets."""
    if not isinstance(dataset, CacheDataset) or not dataset._cache:
        return None

    def nbytes(x: object) -> int:
        if isinstance(x, torch.Tensor):
            return x.element_size() * x.nelement()
        if hasattr(x, "nbytes"):
            return int(x.nbytes)
        if isinstance(x, Mapping):
            return sum(nbytes(v) for v in x.values())
        if isinstance(x, (list, tuple)):
            return sum(nbytes(v) for v in x)
        return 0

    return sum(nbytes(item) for item in dataset._cache) / len(dataset._cache) / 2**20


def _memory(device: torch.device) -> dict[str, float]:
    out = {"peak_rss_gib": _peak_gib(torch.device("cpu"), 0.0)}
    if device.type == "cuda":
        out["peak_cuda_gib"] = _peak_gib(device, 0.0)
    return out


def _reset_memory(device: torch.device) -> None:
    gc.collect()
    _reset_peak_memory(torch.device("cpu"))
    if device.type == "cuda":
        torch.cuda.empty_cache()
        _reset_peak_memory(device)


_ALLOCATION = re.compile(r"can't allocate memory|bad_alloc|out of memory", re.IGNORECASE)
"""What an allocation that failed says (torch's CPU allocator, C++ ``new``, CUDA) when it reaches Python as a
``RuntimeError``."""


def _failure(error: BaseException) -> dict[str, str]:
    """A phase that raised: "does not fit" when an allocation failed anywhere in the chain of causes (MONAI's config
    parser wraps what a component raised), else "error"; with the innermost error's first line."""
    chain = [error]
    while chain[-1].__cause__ or chain[-1].__context__:
        chain.append(chain[-1].__cause__ or chain[-1].__context__)
    memory = any(isinstance(e, (MemoryError, torch.OutOfMemoryError)) or _ALLOCATION.search(str(e)) for e in chain)
    root = chain[-1]
    text = f"{type(root).__name__}: {str(root).strip().splitlines()[0] if str(root).strip() else ''}"
    return {"status": "does not fit" if memory else "error", "error": text[:300]}


def measure_training(
    files: Sequence[str | Path],
    settings: Mapping[str, object],
    iterations: int,
    device: torch.device,
    overrides: Sequence[str | Path] = (),
) -> dict[str, object]:
    """``iterations`` + 1 iterations of the config's ``train#trainer`` without its handlers (the first warms up)."""
    parser = _parser(files, {**settings, "train#handlers": [], "train#trainer#max_epochs": 1}, overrides)
    parser["train#trainer#epoch_length"] = iterations + 1
    parser.get_parsed_content("initialize")
    trainer = parser.get_parsed_content("train#trainer")
    steps, cpu = _timer(trainer, device, Events.ITERATION_STARTED, Events.ITERATION_COMPLETED)
    fetches, _ = _timer(trainer, device, Events.GET_BATCH_STARTED, Events.GET_BATCH_COMPLETED)
    shapes = _batch_shape(trainer)
    trainer.run()
    flop = _forward_flop(trainer.network, shapes[-1])
    kwargs = getattr(trainer, "amp_kwargs", None) or {}
    return {
        "status": "ok",
        "batch": shapes[-1],
        "gflop_per_it": None if flop is None else 3 * flop / 1e9,  # a backward pass counted as twice a forward
        "amp": str(kwargs.get("dtype", torch.float16)).replace("torch.", "") if trainer.amp else "off",
        "s_per_it": statistics.median(steps[1:]),
        "cpu_s_per_it": statistics.median(cpu[1:]),
        "data_s_per_it": statistics.median(fetches[1:]),
        "epochs": int(parser.get_parsed_content("epochs")),
        "batch_size": int(parser.get_parsed_content("train#dataloader#batch_size")),
        "cache_mib_per_item": _cached_mib(parser.get_parsed_content("train#dataset")),
        **_memory(device),
    }


def measure_inference(files: Sequence[str | Path], settings: Mapping[str, object], device: torch.device) -> dict:
    """The config's ``evaluator`` on its first case, untrained (no checkpoint loader)."""
    parser = _parser(files, {**settings, "handlers": []})
    parser["evaluator#epoch_length"] = 1
    parser.get_parsed_content("initialize")
    evaluator = parser.get_parsed_content("evaluator")
    steps, cpu = _timer(evaluator, device, Events.ITERATION_STARTED, Events.ITERATION_COMPLETED)
    fetches, _ = _timer(evaluator, device, Events.GET_BATCH_STARTED, Events.GET_BATCH_COMPLETED)
    shapes = _batch_shape(evaluator)
    evaluator.run()
    out = {
        "status": "ok",
        "case": shapes[0][2:],
        "amp": "on" if evaluator.amp else "off",
        "s_per_case": steps[0],
        "cpu_s_per_case": cpu[0],
        "load_s": fetches[0],
        **_memory(device),
    }
    last = getattr(parser.get_parsed_content("inferer"), "last", None)
    if last is not None:
        out.update({"steps": last.steps, "ended": str(last.reason)})
    return out


def run_bundle(job: Mapping[str, object]) -> None:
    """One bundle's phases in this process (the child of :func:`measure_bundle`); the results so far are rewritten
    to ``job["out"]`` (JSON) after each phase, so a process killed later keeps what it measured."""
    mp.set_start_method(None, force=True)  # the platform's default for DataLoader workers, not the forkserver's
    if job["memory_gib"]:
        size = int(float(job["memory_gib"]) * 2**30)
        resource.setrlimit(resource.RLIMIT_AS, (size, size))
    if job["threads"]:
        torch.set_num_threads(int(job["threads"]))
    device = torch.device(str(job["device"]))
    name, spec = str(job["bundle"]), SPECS[str(job["bundle"])]
    configs = REPO / "bundles" / name / "configs"
    extra = [str(REPO / f) for f in job["overrides"]]
    settings = {
        "bundle_root": str(job["workdir"]),
        "dataset_dir": str(job["dataset_dir"]),
        "device": f"$torch.device('{device}')",
        **spec.settings,
        **(spec.tiny if job["tiny"] else {}),
    }
    results: dict[str, dict] = {}

    def phase(key: str, fn: Callable[..., dict], *args: object) -> None:
        _reset_memory(device)
        cpu = time.process_time()
        try:
            results[key] = fn(*args)
        except Exception as e:  # noqa: BLE001 -- recorded, and the next phase runs
            results[key] = {**_failure(e), **_memory(device)}
        results[key]["cpu_s"] = time.process_time() - cpu
        Path(str(job["out"])).write_text(json.dumps(results))

    for stage, files in spec.stages.items():
        train = [configs / "train.json", *(configs / f for f in files)]
        phase(f"train {stage}".strip(), measure_training, train, settings, int(job["iterations"]), device, extra)
    if job["infer"]:
        phase("inference", measure_inference, [configs / "inference.json"], settings, device)


def available_gib() -> float:
    """MemAvailable of this machine, GiB."""
    with open("/proc/meminfo") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("MemAvailable")) / 2**20


def measure_bundle(
    bundle: str,
    dataset_dir: str,
    workdir: str | Path,
    iterations: int = 3,
    device: str = "cpu",
    overrides: Sequence[str] = (),
    memory_gib: float = 0.0,
    timeout: float = 1800.0,
    threads: int = 0,
    tiny: bool = False,
    infer: bool = True,
) -> dict[str, dict]:
    """:func:`run_bundle` in a fresh process (peak memory of this bundle alone; on the CPU under an address-space
    limit of ``memory_gib`` when > 0); returns ``{phase: figures}``, with ``status`` "ok", "does not fit", "error",
    "killed" or "timed out" per phase. The process is forked from a server that imported this module once (a
    ``forkserver``: no import per bundle, and no CUDA state inherited from the caller)."""
    if bundle not in SPECS:
        raise ValueError(f"bundle: expected one of {sorted(SPECS)}, found {bundle!r}")
    if iterations < 1:
        raise ValueError(f"iterations: expected >= 1 (after one warm-up), found {iterations}")
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    out = workdir / "result.json"
    job = {
        "bundle": bundle,
        "dataset_dir": dataset_dir,
        "workdir": str(workdir),
        "iterations": iterations,
        "device": device,
        "overrides": list(overrides),
        "memory_gib": memory_gib if device == "cpu" else 0.0,
        "threads": threads,
        "tiny": tiny,
        "infer": infer,
        "out": str(out),
    }
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload([run_bundle.__module__])
    process = ctx.Process(target=run_bundle, args=(job,))
    process.start()
    process.join(timeout)
    status = None
    if process.is_alive():
        process.kill()
        process.join()
        status = f"timed out after {timeout:g} s"
    elif process.exitcode:
        code = process.exitcode
        status = f"killed (signal {-code})" if code < 0 else f"exited with {code}"
    results = json.loads(out.read_text()) if out.is_file() else {}
    for key in [f"train {s}".strip() for s in SPECS[bundle].stages] + (["inference"] if infer else []):
        results.setdefault(key, {"status": status or "not run"})
    return results


def _gib(r: Mapping[str, object]) -> str:
    cells = [f"{r['peak_rss_gib']:.2f} GiB RSS"] if "peak_rss_gib" in r else []
    if "peak_cuda_gib" in r:
        cells.append(f"{r['peak_cuda_gib']:.2f} GiB CUDA")
    return ", ".join(cells) or "-"


def _run_iterations(spec: BundleSpec, r: Mapping[str, object]) -> tuple[int, int]:
    """(epochs, iterations per epoch) of the default run on the real data set."""
    return int(r["epochs"]), math.ceil(spec.train_items / r["batch_size"])


def table(results: Mapping[str, Mapping[str, Mapping[str, object]]], gpu_tflops: float = 100.0) -> str:
    """The markdown table of :func:`run`'s results (``{bundle: {phase: figures}}``). A whole default run is
    estimated from the measured step (epochs x ceil(real training items / batch) x seconds per iteration; validation
    left out) and, for a GPU, from the counted FLOP at an assumed sustained ``gpu_tflops`` (an estimate, not a
    measurement)."""
    lines = [
        "| bundle | phase | batch / case | AMP | s per it (data; process CPU s) / s per case (load; CPU s) | "
        "peak memory | cache per item | "
        f"GFLOP per it | whole default run: here / GPU at an assumed {gpu_tflops:g} TFLOP/s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for bundle, phases in results.items():
        spec = SPECS[bundle]
        for key, r in phases.items():
            if r["status"] != "ok":
                lines.append(f"| {bundle} | {key} | {r['status']}: {r.get('error', '')} | | | {_gib(r)} | | | |")
                continue
            if key == "inference":
                steps = f", {r['steps']} steps ({r['ended']})" if "steps" in r else ""
                lines.append(
                    f"| {bundle} | {key} | {'x'.join(map(str, r['case']))} | {r['amp']} | "
                    f"{r['s_per_case']:.2f} ({r['load_s']:.2f}; {r['cpu_s_per_case']:.2f}){steps} | {_gib(r)} | | | |"
                )
                continue
            cache = f"{r['cache_mib_per_item']:.1f} MiB" if r["cache_mib_per_item"] is not None else "-"
            epochs, per_epoch = _run_iterations(spec, r)
            here = f"{epochs} x {per_epoch} it = {epochs * per_epoch * r['s_per_it'] / 3600:.1f} h"
            flop = r["gflop_per_it"]
            seconds = None if flop is None else epochs * per_epoch * flop / (gpu_tflops * 1e3)
            gpu = "-" if seconds is None else f"{seconds / 60:.1f} min" if seconds >= 60 else f"{seconds:.1f} s"
            gflop = "-" if flop is None else f"{flop:.0f}"
            lines.append(
                f"| {bundle} | {key} | {tuple(r['batch'])} | {r['amp']} | {r['s_per_it']:.2f} "
                f"({r['data_s_per_it']:.2f}; {r['cpu_s_per_it']:.2f}) | {_gib(r)} | {cache} | {gflop} | "
                f"{here} / {gpu} |"
            )
    return "\n".join(lines)


def device_line(device: torch.device) -> str:
    """Date, device name and software versions, for the head of a printed table."""
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine()
    return (
        f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, {name} ({os.cpu_count()} cores), "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"load average {' '.join(f'{x:.1f}' for x in os.getloadavg())}"
    )


def run(
    bundles: Sequence[str] = tuple(SPECS),
    iterations: int = 3,
    device: str = "auto",
    overrides: Mapping[str, Sequence[str]] | None = None,
    memory_gib: float = 24.0,
    timeout: float = 1800.0,
    data: str | None = None,
    threads: int = 0,
    tiny: bool = False,
    infer: bool = True,
) -> dict[str, dict[str, dict]]:
    """Write the data (to ``data``, or a temporary folder) and measure every bundle; returns ``{bundle: {phase:
    figures}}`` (no inference phase unless ``infer``). On the CPU the memory limit is ``memory_gib`` or what the
    machine has available, the smaller."""
    overrides = dict(overrides or {})
    unknown = sorted(set(overrides) - set(bundles))
    if unknown:
        raise ValueError(f"overrides: expected keys among the measured bundles {list(bundles)}, found {unknown}")
    dev = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
    limit = min(memory_gib, available_gib()) if dev == "cpu" else 0.0
    with tempfile.TemporaryDirectory() as tmp:
        dirs = write_data(bundles, data or Path(tmp) / "data", tiny)
        return {
            b: measure_bundle(
                b, dirs[b], Path(tmp) / b, iterations, dev, overrides.get(b, ()), limit, timeout, threads, tiny, infer
            )
            for b in bundles
        }


def main(
    bundles: Sequence[str] = tuple(SPECS),
    iterations: int = 3,
    device: str = "auto",
    overrides: Mapping[str, Sequence[str]] | None = None,
    memory_gib: float = 24.0,
    timeout: float = 1800.0,
    data: str | None = None,
    threads: int = 0,
    tiny: bool = False,
    infer: bool = True,
    gpu_tflops: float = 100.0,
) -> None:
    """Measure (see :func:`run`) and print the table (see :func:`table`) with each bundle's real data size."""
    dev = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device)
    print(device_line(dev), f"| memory limit {min(memory_gib, available_gib()):.1f} GiB" if dev.type == "cpu" else "")
    results = run(bundles, iterations, str(dev), overrides, memory_gib, timeout, data, threads, tiny, infer)
    for bundle in results:
        print(f"{bundle}: {SPECS[bundle].data_size}")
    print(table(results, gpu_tflops))


if __name__ == "__main__":
    fire.Fire(main)
