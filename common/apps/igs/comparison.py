"""Compare k-space line patterns by downstream segmentation Dice: frozen network and fine-tuned per pattern."""

from __future__ import annotations

import copy
import csv
import logging
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from common.apps.igs.report import markdown_table, plot_dice_vs_acceleration
from common.apps.igs.search import (
    Normalize,
    cache_line_spectra,
    igs_loss,
    network_input,
)
from common.transforms.intensity.array import zscore_slices
from common.transforms.kspace.masks import line_mask, load_line_pattern
from common.utils.atomic_io import atomic_path

__all__ = ["CENTER_FRACTIONS", "volume_dice", "fine_tune", "PatternComparison"]

logger = logging.getLogger(__name__)

# fastMRI's centre fractions for the equispaced and random baselines, by acceleration (methods.md).
CENTER_FRACTIONS = {4: 0.08, 8: 0.04, 16: 0.04}


def _volume_keys(items: Sequence[dict]) -> list[str]:
    return [f"{d.get('patient', '')}/{d.get('phase', '')}" for d in items]


@torch.no_grad()
def volume_dice(
    network: nn.Module,
    batches: Sequence[tuple[torch.Tensor, torch.Tensor]],
    volumes: Sequence[str],
    mask: torch.Tensor,
    num_classes: int,
    pe_dim: int = -1,
    amp: bool = False,
    normalize: Normalize | None = zscore_slices,
) -> np.ndarray:
    """Dice per volume and class of the network on images undersampled with ``mask``.

    ``batches`` from :func:`~common.apps.igs.cache_line_spectra`; ``volumes`` names the volume of each slice in batch
    order (slices of one volume are pooled, as in ACDC's 3D evaluation). Returns ``(V, num_classes)`` with NaN where
    a class is absent from both prediction and ground truth.
    """
    network.eval()
    names = sorted(set(volumes))
    index = torch.as_tensor([names.index(v) for v in volumes])
    inter = torch.zeros(len(names), num_classes, dtype=torch.float64)
    total = torch.zeros_like(inter)
    start = 0
    for spectrum, label in batches:
        image = network_input(spectrum, mask, pe_dim, normalize)
        with torch.autocast(image.device.type, enabled=amp and image.device.type == "cuda"):
            pred = network(image).argmax(1)
        gt = label[:, 0].long()
        vol = index[start : start + len(pred)]
        start += len(pred)
        for c in range(num_classes):
            p, g = (pred == c).flatten(1), (gt == c).flatten(1)
            inter[:, c].index_add_(0, vol, (p & g).sum(1).double().cpu())
            total[:, c].index_add_(0, vol, (p.sum(1) + g.sum(1)).double().cpu())
    dice = (2 * inter / total).numpy()
    return np.where(total.numpy() > 0, dice, np.nan)


def fine_tune(
    network: nn.Module,
    batches: Sequence[tuple[torch.Tensor, torch.Tensor]],
    mask: torch.Tensor,
    epochs: int,
    learning_rate: float = 1e-4,
    loss: str = "dice_ce",
    pe_dim: int = -1,
    amp: bool = False,
    seed: int = 0,
    normalize: Normalize | None = zscore_slices,
) -> nn.Module:
    """A copy of ``network`` fine-tuned on images undersampled with ``mask`` (AdamW; 0.75 Dice + 0.25 CE)."""
    net = copy.deepcopy(network).train()
    for p in net.parameters():
        p.requires_grad_(True)
    opt = torch.optim.AdamW(net.parameters(), lr=learning_rate)
    loss_fn = igs_loss(loss)
    device_type = mask.device.type
    scaler = torch.amp.GradScaler(enabled=amp and device_type == "cuda")
    gen = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        for i in torch.randperm(len(batches), generator=gen).tolist():
            spectrum, label = batches[i]
            image = network_input(spectrum, mask, pe_dim, normalize)
            with torch.autocast(device_type, enabled=amp and device_type == "cuda"):
                value = loss_fn(net(image).float(), label)
            opt.zero_grad(set_to_none=True)
            scaler.scale(value).backward()
            scaler.step(opt)
            scaler.update()
    return net.eval()


class PatternComparison:
    """IGS vs centre vs equispaced vs random vs full sampling, at each acceleration, under two protocols.

    ``frozen``: the pretrained network segments test images undersampled with each pattern. ``fine_tuned``: a copy of
    it is first fine-tuned ``fine_tune_epochs`` epochs on training images undersampled with the pattern (AdamW
    ``fine_tune_lr``, 0.75 Dice + 0.25 CE). Dice is computed per volume (the slices of a frame pooled) and averaged
    over volumes, per class, over the foreground classes (``mean_fg``) and over all classes incl. background
    (``mean``, the authors' figure). Writes ``pattern_comparison.csv``, ``pattern_comparison.md`` and
    ``dice_vs_acceleration.png`` to ``output_dir``.

    Args:
        network: the pretrained network (weights loaded), ``(B, C, H, W)`` -> logits ``(B, K, H, W)``.
        train_data / test_data: slice dicts (``image`` ``(C, H, W)``, ``label`` ``(1, H, W)``, ``patient``,
            ``phase``).
        output_dir: where the table and the figure go.
        igs_dir: folder with ``igs_x{acc}.npy`` from :class:`~common.apps.igs.IterativeGradientSampling`.
        class_names: one per output class, background first.
        accelerations: factors to compare.
        patterns: any of ``igs``, ``center``, ``equispaced``, ``random`` (full sampling is always a reference row).
        protocols: any of ``frozen``, ``fine_tuned``.
        center_fractions: centre fraction per acceleration for equispaced and random.
        fine_tune_epochs, fine_tune_lr: the fine-tuning protocol.
        seed: for the random pattern and the fine-tuning order.
    """

    def __init__(
        self,
        network: nn.Module,
        train_data: Sequence[dict],
        test_data: Sequence[dict],
        output_dir: str | Path,
        igs_dir: str | Path,
        class_names: Sequence[str],
        accelerations: Sequence[int] = (4, 8, 16),
        patterns: Sequence[str] = ("igs", "center", "equispaced", "random"),
        protocols: Sequence[str] = ("frozen", "fine_tuned"),
        center_fractions: Mapping[int, float] | None = None,
        fine_tune_epochs: int = 25,
        fine_tune_lr: float = 1e-4,
        pe_dim: int = -1,
        batch_size: int = 32,
        device: str | torch.device = "cpu",
        amp: bool = False,
        seed: int = 0,
    ) -> None:
        unknown = set(patterns) - {"igs", "center", "equispaced", "random"}
        if unknown:
            raise ValueError(f"patterns: expected igs/center/equispaced/random, found {sorted(unknown)}")
        if set(protocols) - {"frozen", "fine_tuned"}:
            raise ValueError(f"protocols: expected frozen and/or fine_tuned, found {list(protocols)}")
        if "fine_tuned" in protocols and not train_data:
            raise ValueError("PatternComparison: the fine_tuned protocol expects train_data, found none")
        self.network = network
        self.train_data, self.test_data = train_data, test_data
        self.output_dir, self.igs_dir = Path(output_dir), Path(igs_dir)
        self.class_names = list(class_names)
        self.accelerations = [int(a) for a in accelerations]
        self.patterns, self.protocols = list(patterns), list(protocols)
        self.center_fractions = {int(k): float(v) for k, v in (center_fractions or CENTER_FRACTIONS).items()}
        missing = [a for a in self.accelerations if a not in self.center_fractions]
        if missing and {"equispaced", "random"} & set(self.patterns):
            raise ValueError(f"center_fractions: expected an entry for accelerations {missing}, found none")
        self.fine_tune_epochs, self.fine_tune_lr = fine_tune_epochs, fine_tune_lr
        self.pe_dim, self.batch_size = pe_dim, batch_size
        self.device, self.amp, self.seed = torch.device(device), amp, seed

    def _mask(self, pattern: str, acc: int, width: int) -> torch.Tensor:
        if pattern == "igs":
            return load_line_pattern(self.igs_dir / f"igs_x{acc}.npy", width=width)
        if pattern == "center":
            return line_mask("center", width, acc)
        return line_mask(pattern, width, acc, self.center_fractions[acc], seed=self.seed)

    def run(self) -> list[dict]:
        """Evaluate every (protocol, pattern, acceleration) and write the table and figure; returns the rows."""
        t0 = time.perf_counter()
        self.network.to(self.device).eval()
        width = np.asarray(self.test_data[0]["image"]).shape[self.pe_dim]
        cache = {"device": self.device, "batch_size": self.batch_size, "pe_dim": self.pe_dim}
        test = cache_line_spectra(self.test_data, **cache)
        train = cache_line_spectra(self.train_data, **cache) if "fine_tuned" in self.protocols else []
        volumes = _volume_keys(self.test_data)
        runs = [("full", 1, p) for p in self.protocols] + [
            (pattern, acc, protocol)
            for protocol in self.protocols
            for acc in self.accelerations
            for pattern in self.patterns
        ]
        masks = {(p, a): (torch.ones(width) if p == "full" else self._mask(p, a, width)) for p, a, _ in runs}
        rows = []
        for pattern, acc, protocol in tqdm(runs, desc="patterns", disable=None):
            mask = masks[(pattern, acc)].to(self.device)
            net = self.network
            if protocol == "fine_tuned" and pattern != "full":  # full sampling: the pretrained network itself
                net = fine_tune(
                    self.network,
                    train,
                    mask,
                    self.fine_tune_epochs,
                    self.fine_tune_lr,
                    pe_dim=self.pe_dim,
                    amp=self.amp,
                    seed=self.seed,
                )
            dice = volume_dice(net, test, volumes, mask, len(self.class_names), self.pe_dim, self.amp)
            per_class = np.nanmean(dice, axis=0)
            row = {"protocol": protocol, "pattern": pattern, "acceleration": acc, "lines": int(mask.sum())}
            row.update({f"dice_{n}": float(v) for n, v in zip(self.class_names, per_class)})
            row["mean_fg"] = float(np.nanmean(per_class[1:]))
            row["mean"] = float(np.nanmean(per_class))
            rows.append(row)
            logger.info("%s %s x%d: mean_fg %.4f mean %.4f", protocol, pattern, acc, row["mean_fg"], row["mean"])
        self._write(rows, len(self.test_data), len(set(volumes)))
        logger.info("pattern comparison done in %.1f s -> %s", time.perf_counter() - t0, self.output_dir)
        return rows

    def _write(self, rows: list[dict], n_slices: int, n_volumes: int) -> None:
        self.output_dir.mkdir(parents=True, exist_ok=True)
        with atomic_path(self.output_dir / "pattern_comparison.csv") as tmp:
            with open(tmp, "w", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=list(rows[0]))
                writer.writeheader()
                writer.writerows(rows)
        with atomic_path(self.output_dir / "pattern_comparison.md") as tmp:
            tmp.write_text(markdown_table(rows, self.accelerations, n_slices, n_volumes))
        plot_dice_vs_acceleration(rows, self.output_dir / "dice_vs_acceleration.png")
