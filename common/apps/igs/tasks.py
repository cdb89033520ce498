"""The downstream tasks a k-space pattern is searched and scored for: segmentation (Dice, surface distances per
volume), classification (accuracy, ROC AUC per slice) and reconstruction (SSIM, PSNR per slice); each task's targets
and its scorer for :class:`~common.apps.igs.PatternComparison`."""

from __future__ import annotations

import os
import tempfile
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.handlers.utils import write_metrics_reports
from monai.metrics import PSNRMetric, SSIMMetric, compute_roc_auc
from torch import nn

from common.apps.igs.evaluation import pooled_dice, predict_slices, volume_surface_distances
from common.apps.igs.objective import Batches, autocast_settings, network_input, network_logits
from common.metrics.surface import surface_summary
from common.utils.stats import nanmean

__all__ = [
    "TASKS",
    "task_slices",
    "SegmentationScores",
    "ClassificationScores",
    "ReconstructionScores",
    "pattern_scores",
]

TASKS = ("segmentation", "classification", "reconstruction")

Table = tuple[str, str, int]  # (row key, title, digits) of one markdown table


def task_slices(items: Sequence[dict], task: str) -> list[dict]:
    """The slice dicts with ``label`` set to what ``task`` predicts.

    - ``"segmentation"``: unchanged (``label`` ``(1, H, W)`` class indices).
    - ``"classification"``: ``label`` float32 ``(1,)``, 1 where the slice holds tumour (its ``tumour`` flag), else 0.
    - ``"reconstruction"``: ``label`` float32 ``(C, H, W)``, the fully sampled magnitude ``image`` divided by its
      maximum per channel (a channel that is all zero stays zero), so targets lie in [0, 1] and SSIM and PSNR use a
      data range of 1.
    """
    if task not in TASKS:
        raise ValueError(f"task: expected one of {', '.join(TASKS)}, found '{task}'")
    if task == "segmentation":
        return list(items)
    out = []
    for d in items:
        if task == "classification":
            if "tumour" not in d:
                raise ValueError(f"slice {d.get('patient', '')}/{d.get('slice', '')}: expected a 'tumour' flag")
            label = np.asarray([float(d["tumour"])], dtype=np.float32)
        else:
            image = np.asarray(d["image"], dtype=np.float32)
            peak = image.reshape(len(image), -1).max(1)[:, None, None]
            label = np.divide(image, peak, out=np.zeros_like(image), where=peak > 0)
        out.append({**d, "label": label})
    return out


class SegmentationScores:
    """Per-volume Dice per class and per scored structure, HD95 and ASSD per structure (see
    :class:`~common.apps.igs.PatternComparison`). ``regions``: ``{name: class indices}``; None scores each
    foreground class as a region of its own (named after the class)."""

    def __init__(self, class_names: Sequence[str], regions: Mapping[str, Sequence[int]] | None = None) -> None:
        self.class_names = list(class_names)
        given = {str(k): tuple(int(c) for c in v) for k, v in regions.items()} if regions else None
        bad = {k: v for k, v in (given or {}).items() if not v or not set(v) <= set(range(len(self.class_names)))}
        if bad or (given is not None and set(given) & set(self.class_names)):
            raise ValueError(
                f"regions: expected non-empty sets of class indices < {len(self.class_names)}, named apart from the "
                f"classes {self.class_names}, found {regions}"
            )
        self.regions = given or {n: (c,) for c, n in enumerate(self.class_names) if c > 0}
        self.unit = "px"

    figure = "dice_vs_acceleration.png"

    @property
    def scored(self) -> list[str]:
        """The names of the scored structures (the regions)."""
        return list(self.regions)

    def predict(
        self, network: nn.Module, batches: Batches, mask: torch.Tensor, pe_dim: int, amp: bool | str
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Class maps and ground truth ``(N, H, W)`` (:func:`~common.apps.igs.predict_slices`)."""
        return predict_slices(network, batches, mask, pe_dim, amp)

    def score(self, pred: torch.Tensor, label: torch.Tensor, items: Sequence[dict]) -> tuple[dict, Any]:
        """The row's metrics and the per-volume values ``(dice (V, K), scored dice (V, S), surface distances)``,
        volumes in sorted ``patient/phase`` order."""
        volumes = [f"{d.get('patient', '')}/{d.get('phase', '')}" for d in items]
        regions = list(self.regions.values())
        dice = pooled_dice(pred, label, volumes, len(self.class_names))
        scored = pooled_dice(pred, label, volumes, regions=regions)
        surface = volume_surface_distances(pred, label, items, regions=regions)
        self.unit = surface.unit
        row = {f"dice_{n}": float(v) for n, v in zip(self.class_names, nanmean(dice, axis=0))}
        per_scored = nanmean(scored, axis=0)
        row.update({f"dice_{n}": float(v) for n, v in zip(self.scored, per_scored)})
        row["mean_fg"] = float(nanmean(per_scored))
        row["mean"] = float(nanmean(nanmean(dice, axis=0)))
        summary = surface_summary(surface)
        for key in ("hd95", "assd"):
            row.update({f"{key}_{n}": float(v) for n, v in zip(self.scored, summary[key])})
            row[f"{key}_mean_fg"] = float(nanmean(summary[key]))
        row["surface_missed"] = int(summary["missed"].sum())
        row["surface_spurious"] = int(summary["spurious"].sum())
        return row, (dice, scored, surface)

    def summary(self, n_slices: int, n_volumes: int) -> str:
        return f"Test set: {n_volumes} volumes ({n_slices} slices). Scores per volume, averaged over volumes."

    def tables(self) -> list[Table]:
        unit_text = "mm" if self.unit == "mm" else "pixels: 1 per pixel along H and W, 1 per slice"
        names = ", ".join(self.scored)
        return [
            ("mean_fg", f"Dice, mean over {names} (in brackets: mean incl. background)", 3),
            ("hd95_mean_fg", f"HD95 ({unit_text}), mean over {names}", 2),
            ("assd_mean_fg", f"ASSD ({unit_text}), mean over {names}", 2),
        ]

    def headline(self) -> tuple[str, str]:
        """The row key the figure plots against acceleration, and its axis label."""
        return "mean_fg", f"Dice (mean over {', '.join(self.scored)})"

    def volume_headline(self, runs: Sequence[str], details: Sequence[Any], items: Sequence[dict]) -> dict[str, float]:
        """The headline per run and volume, ``{"<run>/<patient>/<phase>": Dice}``: each volume's NaN-aware mean
        over the scored structures (its ``mean_fg``; NaN where every structure is absent from the volume), the
        values :class:`~common.apps.igs.PatternComparison` pairs by volume."""
        names = sorted({f"{d.get('patient', '')}/{d.get('phase', '')}" for d in items})
        return {
            f"{run}/{name}": float(v)
            for run, (_, scored, _) in zip(runs, details)
            for name, v in zip(names, nanmean(scored, axis=1))
        }

    def write_details(self, output_dir: Path, runs: Sequence[str], details: Sequence[Any], items: Sequence[dict]):
        """Per-volume values with MONAI's ``write_metrics_reports``, a line per run and volume, a column per class or
        structure plus their NaN-aware mean: ``pattern_comparison_dice_raw.csv`` (the classes),
        ``pattern_comparison_dice_fg_raw.csv`` (the scored structures: its ``mean`` is the volume's ``mean_fg``, as
        :meth:`volume_headline` to 4 decimals), ``pattern_comparison_{hd95,assd}_raw.csv`` (the scored structures);
        MONAI writes with plain ``open()``, so into a temporary folder first, then each file is moved into place in
        one rename."""
        names = sorted({f"{d.get('patient', '')}/{d.get('phase', '')}" for d in items})
        lines = [f"{run}/{name}" for run in runs for name in names]
        values = {
            "pattern_comparison_dice": (np.concatenate([d for d, _, _ in details]), self.class_names),
            "pattern_comparison_dice_fg": (np.concatenate([f for _, f, _ in details]), self.scored),
            "pattern_comparison_hd95": (np.concatenate([s.hd95 for _, _, s in details]), self.scored),
            "pattern_comparison_assd": (np.concatenate([s.assd for _, _, s in details]), self.scored),
        }
        with tempfile.TemporaryDirectory(dir=output_dir, prefix=".per_volume.") as tmp:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # its nanmean of a line whose classes are all NaN
                for key, (v, labels) in values.items():
                    write_metrics_reports(tmp, lines, None, {key: v}, None, class_labels=list(labels))
            for key in values:
                os.replace(Path(tmp) / f"{key}_raw.csv", Path(output_dir) / f"{key}_raw.csv")


def _outputs(
    network: nn.Module, batches: Batches, mask: torch.Tensor, pe_dim: int, amp: bool | str
) -> tuple[torch.Tensor, torch.Tensor]:
    """The float32 network outputs on the undersampled inputs and the targets, in batch order, on the CPU."""
    network.eval()
    dtype, _ = autocast_settings(mask.device, amp)
    outs, targets = [], []
    with torch.no_grad():
        for spectrum, target in batches:
            outs.append(network_logits(network, network_input(spectrum, mask, pe_dim), dtype).cpu())
            targets.append(target.float().cpu())
    return torch.cat(outs), torch.cat(targets)


class ClassificationScores:
    """Tumour vs no tumour per slice: ``accuracy`` (the argmax class against the label) and ``auc`` (ROC AUC of the
    softmax probability of class 1, MONAI's ``compute_roc_auc``: the Mann-Whitney probability that a tumour slice
    scores above a tumour-free one, ties counting half; NaN when the test slices hold one class only), over the
    test slices. The network gives two logits per slice ``(B, 2)``."""

    figure = "auc_vs_acceleration.png"

    def predict(
        self, network: nn.Module, batches: Batches, mask: torch.Tensor, pe_dim: int, amp: bool | str
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Probability of tumour ``(N,)`` and the 0/1 label ``(N,)``."""
        logits, label = _outputs(network, batches, mask, pe_dim, amp)
        return torch.softmax(logits, 1)[:, 1], label.reshape(len(label), -1)[:, 0]

    def score(self, prob: torch.Tensor, label: torch.Tensor, items: Sequence[dict]) -> tuple[dict, Any]:
        accuracy = float(((prob > 0.5).double() == label.double()).double().mean())
        if len(torch.unique(label)) < 2:
            auc = float("nan")
        else:
            auc = float(compute_roc_auc(prob, label))
        return {"accuracy": accuracy, "auc": auc}, None

    def summary(self, n_slices: int, n_volumes: int) -> str:
        return f"Test set: {n_slices} slices of {n_volumes} volumes. Scores over the slices."

    def tables(self) -> list[Table]:
        return [("auc", "ROC AUC, tumour vs no tumour per slice", 3), ("accuracy", "Accuracy per slice", 3)]

    def headline(self) -> tuple[str, str]:
        return "auc", "ROC AUC (tumour per slice)"

    def volume_headline(self, runs: Sequence[str], details: Sequence[Any], items: Sequence[dict]) -> None:
        """None: the scores are over all test slices, with no value per volume to pair."""

    def write_details(self, output_dir: Path, runs: Sequence[str], details: Sequence[Any], items: Sequence[dict]):
        """Nothing per volume: the scores are over slices."""


class ReconstructionScores:
    """Zero-filled image -> full image: SSIM and PSNR per slice and channel between the network's output (clipped
    to [0, 1]: a no-op for the bundle's sigmoid-bounded network, a guard for an unbounded one) and the target of
    :func:`task_slices` (data range 1; MONAI's ``SSIMMetric``: Gaussian window 11, sigma 1.5, k1 0.01, k2 0.03, and
    ``PSNRMetric``), averaged over slices: ``ssim_<channel>``, ``psnr_<channel>`` and their means over channels
    ``ssim``, ``psnr``. ``channel_names``: one per image channel."""

    figure = "ssim_vs_acceleration.png"

    def __init__(self, channel_names: Sequence[str]) -> None:
        self.channel_names = list(channel_names)

    def predict(
        self, network: nn.Module, batches: Batches, mask: torch.Tensor, pe_dim: int, amp: bool | str
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Reconstruction (clipped to [0, 1]) and target ``(N, C, H, W)``."""
        out, target = _outputs(network, batches, mask, pe_dim, amp)
        return out.clamp(0.0, 1.0), target

    def score(self, pred: torch.Tensor, target: torch.Tensor, items: Sequence[dict]) -> tuple[dict, Any]:
        n, c = pred.shape[:2]
        if c != len(self.channel_names):
            raise ValueError(f"reconstruction: expected {len(self.channel_names)} channels, found {c}")
        flat = [x.reshape(n * c, 1, *x.shape[2:]) for x in (pred, target)]
        ssim = SSIMMetric(spatial_dims=2, data_range=1.0, reduction="none")(*flat).reshape(n, c)
        psnr = PSNRMetric(max_val=1.0, reduction="none")(*flat).reshape(n, c)
        row = {}
        for key, values in (("ssim", ssim), ("psnr", psnr)):
            per_channel = values.double().mean(0)
            row.update({f"{key}_{name}": float(v) for name, v in zip(self.channel_names, per_channel)})
            row[key] = float(per_channel.mean())
        return row, None

    def summary(self, n_slices: int, n_volumes: int) -> str:
        return (
            f"Test set: {n_slices} slices of {n_volumes} volumes. Scores per slice and channel, averaged over slices "
            f"(and channels: {', '.join(self.channel_names)})."
        )

    def tables(self) -> list[Table]:
        return [("ssim", "SSIM, mean over slices and channels", 3), ("psnr", "PSNR (dB), mean over slices", 2)]

    def headline(self) -> tuple[str, str]:
        return "ssim", "SSIM (mean over slices and channels)"

    def volume_headline(self, runs: Sequence[str], details: Sequence[Any], items: Sequence[dict]) -> None:
        """None: the scores are averaged over slices, with no value per volume kept to pair."""

    def write_details(self, output_dir: Path, runs: Sequence[str], details: Sequence[Any], items: Sequence[dict]):
        """Nothing per volume: the scores are per slice."""


def pattern_scores(
    task: str, class_names: Sequence[str], regions: Mapping[str, Sequence[int]] | None = None
) -> SegmentationScores | ClassificationScores | ReconstructionScores:
    """The scorer of ``task``: ``class_names`` are the segmentation classes (background first), the two classes of
    classification, or the reconstructed channels; ``regions`` only for segmentation."""
    if task not in TASKS:
        raise ValueError(f"task: expected one of {', '.join(TASKS)}, found '{task}'")
    if task != "segmentation" and regions:
        raise ValueError(f"regions: expected none for the {task} task, found {regions}")
    if task == "segmentation":
        return SegmentationScores(class_names, regions)
    if task == "classification":
        if len(class_names) != 2:
            raise ValueError(f"class_names: expected 2 classes for classification, found {list(class_names)}")
        return ClassificationScores()
    return ReconstructionScores(class_names)
