"""Training throughput of the unet_lgg bundle pipeline vs a seed-style loop on the same slices; prints images/s.

(a) bundle: ``bundles/unet_lgg/configs/train.json`` parsed with MONAI's ConfigParser (CacheDataset, DataLoader
    workers, flip + rotation/scale augmentation, :class:`~common.networks.nets.UNet2d`, MONAI DiceLoss,
    SupervisedTrainer; AMP on CUDA), validation off, checkpoints to a temporary folder.
(b) seed-style: the seed's structure (:class:`HookUNet`: skips pushed and popped by forward hooks on an activation
    list, sigmoid output), its soft Dice loss, Adam, fp32, a plain ``torch.utils.data.DataLoader`` over the same
    slices (no augmentation, no workers).
Both train on the training fold of a synthetic kaggle_3m copy (written to a temporary folder unless ``--data`` is
given), with the same batch size, for ``epochs`` epochs each; images/s is measured over the epochs after the first
(warm-up), and the ratio (a)/(b) comes from the same run. CUDA is used when available (``--device cpu`` forces it).

Usage: python benchmarks/bench_unet_lgg.py [--patients 6] [--size 256] [--epochs 3] [--batch 8] [--workers 2]
    [--depth 4] [--features 32] [--threads 0] [--device auto] [--data DIR]
    (``--threads 0``: torch's default; on cores shared with other jobs 1 thread is steadier)
"""

from __future__ import annotations

import datetime
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import fire
import monai
import numpy as np
import torch
from ignite.engine import Events
from monai.bundle import ConfigParser

from common.data import lgg_slices
from common.synthetic.lgg import write_synthetic_lgg

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # the reference implementations live in the test-support module
from tests.support.reference import HookUNet, seed_dice_loss  # noqa: E402

BUNDLE = REPO / "bundles" / "unet_lgg"


class _Slices(torch.utils.data.Dataset):
    def __init__(self, items: list[dict]) -> None:
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        d = self.items[i]
        return torch.from_numpy(d["image"]), torch.from_numpy(d["label"].astype(np.float32))


def _cpu_name() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    names = (
        [ln.split(":", 1)[1].strip() for ln in cpuinfo.read_text().splitlines() if ln.startswith("model name")]
        if cpuinfo.is_file()
        else []
    )
    return f"{names[0] if names else platform.processor() or 'CPU'} ({os.cpu_count()} cores)"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def bench_bundle(
    data: Path,
    size: int,
    epochs: int,
    batch: int,
    workers: int,
    depth: int,
    features: int,
    device: torch.device,
    ckpt_dir: Path,
) -> tuple[float, int]:
    """Images/s of the bundle's trainer over epochs 2..``epochs``; returns (images/s, training slices)."""
    parser = ConfigParser()
    parser.read_config(str(BUNDLE / "configs" / "train.json"))
    parser.update(
        {
            "bundle_root": str(BUNDLE),
            "dataset_dir": str(data),
            "ckpt_dir": str(ckpt_dir),
            "image_size": size,
            "epochs": epochs,
            "val_interval": epochs + 1,
            "batch_size": batch,
            "num_workers": workers,
            "depth": depth,
            "features": features,
            "device": f"$torch.device('{device}')",
            "amp": device.type == "cuda",
        }
    )
    parser.get_parsed_content("initialize")  # determinism, checkpoint folder
    trainer = parser.get_parsed_content("train#trainer")
    n = len(parser.get_parsed_content("train#dataset"))
    times: list[float] = []
    trainer.add_event_handler(Events.EPOCH_STARTED, lambda e: (_sync(device), times.append(time.perf_counter())))
    trainer.add_event_handler(Events.EPOCH_COMPLETED, lambda e: (_sync(device), times.append(time.perf_counter())))
    trainer.run()
    seconds = sum(times[2 * k + 1] - times[2 * k] for k in range(1, epochs))
    return n * (epochs - 1) / seconds, n


def bench_seed_style(
    items: list[dict], epochs: int, batch: int, depth: int, features: int, device: torch.device
) -> float:
    """Images/s of the seed-style loop over epochs 2..``epochs``."""
    torch.manual_seed(0)
    net = HookUNet(3, 1, features, depth).to(device).train()
    opt = torch.optim.Adam(net.parameters(), lr=1e-4)
    loader = torch.utils.data.DataLoader(_Slices(items), batch_size=batch, shuffle=True)
    seconds = 0.0
    for epoch in range(epochs):
        _sync(device)
        t0 = time.perf_counter()
        for image, label in loader:
            image, label = image.to(device), label.to(device)
            opt.zero_grad()
            loss = seed_dice_loss(net(image), label)
            loss.backward()
            opt.step()
        _sync(device)
        if epoch > 0:
            seconds += time.perf_counter() - t0
    return len(items) * (epochs - 1) / seconds


def main(
    patients: int = 6,
    size: int = 256,
    epochs: int = 3,
    batch: int = 8,
    workers: int = 2,
    depth: int = 4,
    features: int = 32,
    threads: int = 0,
    device: str = "auto",
    data: str | None = None,
) -> None:
    """Run both loops on the same data and print images/s and the ratio."""
    if epochs < 2:
        raise ValueError(f"epochs: expected >= 2 (the first is warm-up), found {epochs}")
    if threads > 0:
        torch.set_num_threads(threads)
    dev = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(data) if data else write_synthetic_lgg(Path(tmp) / "lgg", n_patients=patients, seed=0, size=size)
        items = lgg_slices(root, "train", image_size=size)
        seed_ips = bench_seed_style(items, epochs, batch, depth, features, dev)
        bundle_ips, n = bench_bundle(root, size, epochs, batch, workers, depth, features, dev, Path(tmp) / "models")
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else _cpu_name()
    print(
        f"unet_lgg training throughput, {datetime.date.today()}, {name}, torch {torch.__version__}, "
        f"MONAI {monai.__version__}, torch threads {torch.get_num_threads()}"
    )
    print(
        f"data: synthetic kaggle_3m, {n} training slices {size}x{size}x3; U-Net depth {depth}, {features} features; "
        f"batch {batch}; {epochs} epochs each, first one warm-up"
    )
    print(f"  seed-style loop (hook U-Net, fp32, plain DataLoader, no augmentation): {seed_ips:8.1f} images/s")
    print(
        f"  bundle pipeline (UNet2d, CacheDataset, {workers} workers, augmentation, AMP {dev.type == 'cuda'}): "
        f"{bundle_ips:8.1f} images/s"
    )
    print(f"  ratio bundle / seed-style: {bundle_ips / seed_ips:.2f}x")


if __name__ == "__main__":
    fire.Fire(main)
