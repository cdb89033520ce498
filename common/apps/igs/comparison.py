"""Compare k-space line patterns by downstream segmentation (Dice, HD95, ASSD per volume): frozen network and
fine-tuned per pattern."""

from __future__ import annotations

import copy
import csv
import logging
import os
import tempfile
import time
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from monai.handlers.utils import write_metrics_reports
from torch import nn
from tqdm import tqdm

from common.apps.igs.report import markdown_table, plot_dice_vs_acceleration
from common.apps.igs.search import (
    Normalize,
    cache_line_spectra,
    igs_loss,
    network_input,
)
from common.metrics.surface import SurfaceDistances, surface_distances, surface_summary
from common.transforms.intensity.array import zscore_slices
from common.transforms.kspace.masks import line_mask, load_line_pattern
from common.utils.atomic_io import atomic_path

__all__ = [
    "CENTER_FRACTIONS",
    "predict_slices",
    "pooled_dice",
    "volume_dice",
    "volume_surface_distances",
    "fine_tune",
    "PatternComparison",
]

logger = logging.getLogger(__name__)

# fastMRI's centre fractions for the equispaced and random baselines, by acceleration (methods.md).
CENTER_FRACTIONS = {4: 0.08, 8: 0.04, 16: 0.04}


def _volume_keys(items: Sequence[dict]) -> list[str]:
    return [f"{d.get('patient', '')}/{d.get('phase', '')}" for d in items]


@torch.no_grad()
def predict_slices(
    network: nn.Module,
    batches: Sequence[tuple[torch.Tensor, torch.Tensor]],
    mask: torch.Tensor,
    pe_dim: int = -1,
    amp: bool = False,
    normalize: Normalize | None = zscore_slices,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The network's class map of every slice undersampled with ``mask``, and the ground truth, in batch order.

    ``batches`` from :func:`~common.apps.igs.cache_line_spectra`. Returns ``(N, H, W)`` uint8 prediction (argmax of
    the logits) and ground truth, on the CPU (classes < 256).
    """
    network.eval()
    preds, labels = [], []
    for spectrum, label in batches:
        image = network_input(spectrum, mask, pe_dim, normalize)
        with torch.autocast(image.device.type, enabled=amp and image.device.type == "cuda"):
            preds.append(network(image).argmax(1).to(torch.uint8).cpu())
        labels.append(label[:, 0].round().to(torch.uint8).cpu())
    return torch.cat(preds), torch.cat(labels)


def pooled_dice(pred: torch.Tensor, label: torch.Tensor, volumes: Sequence[str], num_classes: int) -> np.ndarray:
    """Dice per volume and class with the slices of a volume pooled (the Dice of the stacked volume, as in ACDC's 3D
    evaluation).

    ``pred``, ``label`` ``(N, H, W)`` class maps; ``volumes`` names the volume of each slice. Returns
    ``(V, num_classes)`` float64, volumes in sorted name order, NaN where a class is absent from both prediction and
    ground truth (an empty ground truth with a non-empty prediction scores 0).
    """
    names = sorted(set(volumes))
    index = torch.as_tensor([names.index(v) for v in volumes])
    inter = torch.zeros(len(names), num_classes, dtype=torch.float64)
    total = torch.zeros_like(inter)
    for c in range(num_classes):
        p, g = (pred == c).flatten(1), (label == c).flatten(1)
        inter[:, c].index_add_(0, index, (p & g).sum(1).double())
        total[:, c].index_add_(0, index, (p.sum(1) + g.sum(1)).double())
    dice = (2 * inter / total).numpy()
    return np.where(total.numpy() > 0, dice, np.nan)


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
    """Dice per volume and class of the network on images undersampled with ``mask``: :func:`predict_slices`, then
    :func:`pooled_dice` (``(V, num_classes)``, NaN where a class is absent from both prediction and ground truth)."""
    pred, label = predict_slices(network, batches, mask, pe_dim, amp, normalize)
    return pooled_dice(pred, label, volumes, num_classes)


def volume_surface_distances(
    pred: torch.Tensor, label: torch.Tensor, items: Sequence[dict], num_classes: int
) -> SurfaceDistances:
    """HD95 and ASSD per volume and foreground class (:func:`~common.metrics.surface_distances`).

    ``pred``, ``label`` ``(N, H, W)`` class maps of the slice dicts ``items`` (same order, with ``patient``,
    ``phase``, ``slice`` and ``spacing``: mm per pixel along H and W and the slice thickness). Each volume's slices
    are stacked in ``slice`` order into ``(H, W, D)``; volumes in sorted ``patient/phase`` order, as
    :func:`pooled_dice`. Distances are in mm, or in pixels (1 per pixel and per slice) when no item has ``spacing``.
    Returns ``(V, num_classes - 1)`` arrays (background left out); NaN and counted where a mask is empty (see
    :data:`~common.metrics.EMPTY_MASK_CONVENTION`).
    """
    if len(items) != len(pred) or pred.shape != label.shape:
        raise ValueError(
            f"pred, label, items: expected {len(items)} slices (one per item) of equal shape, found "
            f"{tuple(pred.shape)} and {tuple(label.shape)}"
        )
    with_spacing = ["spacing" in d for d in items]
    if any(with_spacing) and not all(with_spacing):
        raise ValueError(
            f"items: expected 'spacing' in every slice dict or in none, found it in {sum(with_spacing)} "
            f"of {len(items)}"
        )
    keys = _volume_keys(items)
    preds, labels, spacings = [], [], []
    for name in sorted(set(keys)):
        members = sorted((int(items[i].get("slice", i)), i) for i, k in enumerate(keys) if k == name)
        numbers = [n for n, _ in members]
        if len(set(numbers)) != len(numbers):
            raise ValueError(f"items: expected distinct 'slice' numbers in volume {name}, found {numbers}")
        order = [i for _, i in members]
        preds.append(pred[order].permute(1, 2, 0))
        labels.append(label[order].permute(1, 2, 0))
        if all(with_spacing):
            sp = {tuple(np.asarray(items[i]["spacing"], dtype=np.float64).tolist()) for i in order}
            if len(sp) != 1:
                raise ValueError(f"items: expected one spacing per volume, found {sorted(sp)} in volume {name}")
            spacings.append(sp.pop())
    # one call per volume: the depths differ between volumes (surface_distances loops over volumes anyway)
    parts = [
        surface_distances(p[None, None], g[None, None], s, num_classes=num_classes)
        for p, g, s in zip(preds, labels, spacings or [None] * len(preds))
    ]
    fields = ("hd95", "assd", "pred_empty", "label_empty")
    return SurfaceDistances(*(np.concatenate([getattr(d, f) for d in parts]) for f in fields), unit=parts[0].unit)


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
    (``mean``, the authors' figure). HD95 and ASSD are computed per volume (the slices of a frame stacked in slice
    order, in mm from each slice's ``spacing``) and foreground class, averaged over volumes per class
    (``hd95_<class>``, ``assd_<class>``) and then over the foreground classes (``hd95_mean_fg``, ``assd_mean_fg``);
    a class empty in the prediction or the ground truth of a volume gives NaN, left out of the means, and is counted
    in ``surface_missed`` / ``surface_spurious`` (:data:`~common.metrics.EMPTY_MASK_CONVENTION`).

    Writes to ``output_dir``: ``pattern_comparison.csv`` (one row per protocol, pattern and acceleration),
    ``pattern_comparison.md``, ``dice_vs_acceleration.png``, and the per-volume values
    ``pattern_comparison_{dice,hd95,assd}_raw.csv`` (one line per run and volume, named
    ``<protocol>/<pattern>/x<acc>/<patient>/<phase>``; the ``mean`` column is the NaN-aware mean over that line's
    classes).

    Args:
        network: the pretrained network (weights loaded), ``(B, C, H, W)`` -> logits ``(B, K, H, W)``.
        train_data / test_data: slice dicts (``image`` ``(C, H, W)``, ``label`` ``(1, H, W)``, ``patient``,
            ``phase``; test slices also ``slice`` and ``spacing`` ``(3,)`` mm, see
            :func:`~common.data.acdc.load_acdc_slices`; without ``spacing`` the distances are in pixels).
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
        rows, details = [], []
        unit = "px"
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
            pred, label = predict_slices(net, test, mask, self.pe_dim, self.amp)
            dice = pooled_dice(pred, label, volumes, len(self.class_names))
            surface = volume_surface_distances(pred, label, self.test_data, len(self.class_names))
            unit = surface.unit
            per_class = _nanmean(dice, axis=0)
            row = {"protocol": protocol, "pattern": pattern, "acceleration": acc, "lines": int(mask.sum())}
            row.update({f"dice_{n}": float(v) for n, v in zip(self.class_names, per_class)})
            row["mean_fg"] = float(_nanmean(per_class[1:]))
            row["mean"] = float(_nanmean(per_class))
            summary = surface_summary(surface)
            for key in ("hd95", "assd"):
                row.update({f"{key}_{n}": float(v) for n, v in zip(self.class_names[1:], summary[key])})
                row[f"{key}_mean_fg"] = float(_nanmean(summary[key]))
            row["surface_missed"] = int(summary["missed"].sum())
            row["surface_spurious"] = int(summary["spurious"].sum())
            rows.append(row)
            details.append((f"{protocol}/{pattern}/x{acc}", dice, surface))
            logger.info(
                "%s %s x%d: Dice mean_fg %.4f mean %.4f, HD95 mean_fg %.2f %s, ASSD mean_fg %.2f %s",
                protocol,
                pattern,
                acc,
                row["mean_fg"],
                row["mean"],
                row["hd95_mean_fg"],
                unit,
                row["assd_mean_fg"],
                unit,
            )
        self._write(rows, len(self.test_data), len(set(volumes)), unit)
        self._write_per_volume(details, sorted(set(volumes)))
        logger.info("pattern comparison done in %.1f s -> %s", time.perf_counter() - t0, self.output_dir)
        return rows

    def _write(self, rows: list[dict], n_slices: int, n_volumes: int, unit: str) -> None:
        self.output_dir.mkdir(parents=True, exist_ok=True)
        with atomic_path(self.output_dir / "pattern_comparison.csv") as tmp:
            with open(tmp, "w", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=list(rows[0]))
                writer.writeheader()
                writer.writerows(rows)
        with atomic_path(self.output_dir / "pattern_comparison.md") as tmp:
            tmp.write_text(markdown_table(rows, self.accelerations, n_slices, n_volumes, unit))
        plot_dice_vs_acceleration(rows, self.output_dir / "dice_vs_acceleration.png")

    def _write_per_volume(self, details: list[tuple[str, np.ndarray, SurfaceDistances]], names: list[str]) -> None:
        """Per-volume values with MONAI's ``write_metrics_reports`` (one ``<key>_raw.csv`` per metric, a line per run
        and volume, a column per class plus their mean); it writes with plain ``open()``, so into a temporary folder
        first, then each file is moved into place in one rename."""
        lines = [f"{run}/{name}" for run, _, _ in details for name in names]
        values = {
            "pattern_comparison_dice": (np.concatenate([d for _, d, _ in details]), self.class_names),
            "pattern_comparison_hd95": (np.concatenate([s.hd95 for _, _, s in details]), self.class_names[1:]),
            "pattern_comparison_assd": (np.concatenate([s.assd for _, _, s in details]), self.class_names[1:]),
        }
        with tempfile.TemporaryDirectory(dir=self.output_dir, prefix=".per_volume.") as tmp:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # its nanmean of a line whose classes are all NaN
                for key, (v, labels) in values.items():
                    write_metrics_reports(tmp, lines, None, {key: v}, None, class_labels=list(labels))
            for key in values:
                os.replace(Path(tmp) / f"{key}_raw.csv", self.output_dir / f"{key}_raw.csv")


def _nanmean(values: np.ndarray, axis: int | None = None) -> np.ndarray:
    """``np.nanmean`` without the warning: NaN where every value is NaN."""
    values = np.asarray(values, dtype=np.float64)
    n = (~np.isnan(values)).sum(axis)
    return np.where(n > 0, np.nansum(values, axis) / np.maximum(n, 1), np.nan)
