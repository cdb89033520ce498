"""Peak memory of one training step of each bundle's default training configs at the real data's size (DeepIGeoS: its
largest stage, R-Net + CRF-Net(fu) on 128^3 patches), and with the memory options where a bundle has them
(``configs/low_memory.json``); prints measured figures.

Each case parses a bundle's training configs as a run merges them (``--override`` on top, e.g. a smaller patch to
calibrate quickly), builds the network, loss and optimizer from them on the CPU, and runs MONAI's
``SupervisedTrainer`` for one optimizer step (``accumulation_steps`` micro-batches where the configs set it) with the
configs' ``amp`` settings (off on the CPU: fp32) on random inputs of the configs' patch and batch sizes
(``batch_size x samples_per_case`` patches where the bundle samples several per case). The data pipeline is left out:
the figures are the network's training step (activations, gradients, optimizer state) plus the Python/PyTorch process
(its size before the step is printed too).

Every case runs in its own process with its address space limited to ``--limit_gib`` (``RLIMIT_AS``), so that a case
that needs more fails with an allocation error instead of swapping or waking the OOM killer of a shared machine.
Printed per case: patches per micro-batch, micro-batches run of the step's (``--micro_batches``: fewer to save time;
the peak is reached in the first), resident memory before the step and its peak (``ru_maxrss``), seconds, or the
error.

Usage: python benchmarks/bench_memory_options.py [--cases "['spine', 'spine_low_memory']"] [--limit_gib 20]
    [--override "{'patch_size': [64, 64, 64], 'network_def#checkpoint': True}"] [--threads 1] [--micro_batches 0]
"""

from __future__ import annotations

import datetime
import json
import platform
import resource
import subprocess
import sys
import time
from collections.abc import Callable, Sequence

import fire
import torch
from monai.bundle import ConfigParser
from monai.engines import SupervisedTrainer, default_prepare_batch

Batch = dict[str, torch.Tensor]


def _spine_batch(parser: ConfigParser) -> Batch:
    """``batch_size x samples_per_case`` patches: image + instance memory in, (target, weight, completeness) out."""
    n = parser.get_parsed_content("batch_size") * parser.get_parsed_content("samples_per_case")
    size = parser.get_parsed_content("patch_size")
    target = (torch.rand(n, 1, *size) > 0.9).float()
    weight = 1.0 + 8.0 * torch.rand(n, 1, *size)
    complete = torch.ones(n, 1, *size)
    return {"image": torch.rand(n, 2, *size), "label": torch.cat([target, weight, complete], dim=1)}


def _zoom_batch(parser: ConfigParser) -> Batch:
    """``batch_size`` T1w crops of ``patch_size`` and their binary lesion masks."""
    n, size = parser.get_parsed_content("batch_size"), parser.get_parsed_content("patch_size")
    return {"image": torch.randn(n, 1, *size), "label": (torch.rand(n, 1, *size) > 0.99).float()}


def _rnet_crf_batch(parser: ConfigParser) -> Batch:
    """``rnet_batch_size`` R-Net inputs (image, P-Net label, two geodesic maps), clicks' seeds and class labels."""
    n, size = parser.get_parsed_content("rnet_batch_size"), parser.get_parsed_content("rnet_patch_size")
    seeds = torch.zeros(n, 2, *size)
    seeds[:, 1, size[0] // 2, size[1] // 2, size[2] // 2] = 1.0
    return {"image": torch.rand(n, 4, *size), "seeds": seeds, "label": (torch.rand(n, 1, *size) > 0.9).float()}


def _slices_batch(parser: ConfigParser) -> Batch:
    """``batch_size`` 2D slices of ``image_size`` (240 x 240 where the configs have none: BraTS) with the network's
    input channels, and their class maps (binary masks for one output channel). The IGS bundles' ``network_def`` is
    their ``unet_def``."""
    n, size = parser.get_parsed_content("batch_size"), parser.get_parsed_content("image_size", default=240)
    net = "unet_def" if "unet_def" in parser else "network_def"
    channels = parser.get_parsed_content(f"{net}#in_channels")
    classes = max(2, parser.get_parsed_content(f"{net}#out_channels"))
    return {
        "image": torch.randn(n, channels, size, size),
        "label": torch.randint(0, classes, (n, 1, size, size)).float(),
    }


# case -> (bundle, configs merged in order, the batch at the real data's size)
CASES: dict[str, tuple[str, tuple[str, ...], Callable[[ConfigParser], Batch]]] = {
    "spine": ("iterative_fcn_spine", ("train.json",), _spine_batch),
    "spine_low_memory": ("iterative_fcn_spine", ("train.json", "low_memory.json"), _spine_batch),
    "zoom_in": ("resunet_zoom_atlas", ("train.json",), _zoom_batch),
    "zoom_out": ("resunet_zoom_atlas", ("train.json", "zoom_out.json"), _zoom_batch),
    "deepigeos_rnet_crf": (
        "deepigeos_brats",
        ("train.json", "train_rnet.json", "train_rnet_crf.json"),
        _rnet_crf_batch,
    ),
    "igs_brats": ("igs_brats", ("train.json",), _slices_batch),
    "igs_acdc": ("igs_acdc", ("train.json",), _slices_batch),
    "unet_lgg": ("unet_lgg", ("train.json",), _slices_batch),
}


def _max_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def one_step(case: str, override: dict, micro_batches: int = 0) -> dict:
    """Runs ``case``'s training step in this process (``micro_batches`` iterations of the trainer, all of the step's
    by default; its peak memory is the first's) -> the figures (``error`` where it failed)."""
    bundle, configs, make_batch = CASES[case]
    root = f"bundles/{bundle}"
    parser = ConfigParser()
    parser.read_config([f"{root}/configs/{name}" for name in configs])
    parser.update({"bundle_root": root, "device": "$torch.device('cpu')", **override})
    torch.manual_seed(0)
    batch = make_batch(parser)
    steps = parser.get_parsed_content("train#trainer#accumulation_steps", default=1)
    network = parser.get_parsed_content("network")
    trainer = SupervisedTrainer(
        device=torch.device("cpu"),
        max_epochs=1,
        train_data_loader=[batch] * (micro_batches or steps),
        network=network,
        optimizer=parser.get_parsed_content("optimizer"),
        loss_function=parser.get_parsed_content("loss"),
        prepare_batch=parser.get_parsed_content("train#prepare_batch", default=default_prepare_batch),
        amp=parser.get_parsed_content("amp"),
        amp_kwargs=parser.get_parsed_content("amp_kwargs", default=None),
        accumulation_steps=steps,
    )
    figures = {
        "case": case,
        "configs": list(configs),
        "patches": list(batch["image"].shape),
        "micro_batches": f"{micro_batches or steps} of {steps}",
        "checkpoint": any(getattr(m, "checkpoint", False) is True for m in network.modules()),
        "rss_before_mib": round(_max_rss_mib()),
    }
    start = time.perf_counter()
    try:
        trainer.run()
    except (RuntimeError, MemoryError) as error:  # the address-space limit: an allocation refused
        return {**figures, "error": str(error).splitlines()[0][:200]}
    return {**figures, "peak_rss_mib": round(_max_rss_mib()), "seconds": round(time.perf_counter() - start, 1)}


def _limited(limit_gib: float) -> Callable[[], None]:
    def apply() -> None:
        limit = int(limit_gib * 2**30)
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    return apply


def main(
    cases: Sequence[str] = tuple(CASES),
    limit_gib: float = 20.0,
    override: dict | None = None,
    threads: int = 1,
    micro_batches: int = 0,
    child: str = "",
) -> None:
    overrides = dict(override or {})  # a Python dict literal (fire parses it): True, not true
    if child:  # one case, in the limited process the parent started
        torch.set_num_threads(threads)
        print(json.dumps(one_step(child, overrides, micro_batches)), flush=True)
        return
    unknown = [c for c in cases if c not in CASES]
    if unknown:
        raise ValueError(f"cases: expected names among {list(CASES)}, found {unknown}")
    print(
        f"{datetime.date.today()}, {platform.processor() or platform.machine()}, torch {torch.__version__}, "
        f"{threads} thread(s), address space limited to {limit_gib} GiB per case, overrides {overrides}"
    )
    for case in cases:
        command = [sys.executable, __file__, "--child", case, "--override", repr(overrides)]
        command += ["--threads", str(threads), "--micro_batches", str(micro_batches)]
        result = subprocess.run(command, capture_output=True, text=True, preexec_fn=_limited(limit_gib))
        lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
        if result.returncode or not lines:
            print(f"  {case}: exit {result.returncode}: {result.stderr.strip().splitlines()[-1:]}")
            continue
        r = json.loads(lines[-1])
        shape = "x".join(str(s) for s in r["patches"])
        head = f"  {case} ({' + '.join(r['configs'])}): {shape}, {r['micro_batches']} micro-batch(es) of the step"
        head += f", checkpoint {r['checkpoint']}, before the step {r['rss_before_mib'] / 1024:.1f} GiB"
        if "error" in r:
            print(f"{head}: FAILED within {limit_gib} GiB ({r['error']})")
        else:
            print(f"{head}, peak {r['peak_rss_mib'] / 1024:.1f} GiB, {r['seconds']} s")


if __name__ == "__main__":
    fire.Fire(main)
