"""Iterative gradient sampling (IGS): greedy k-space line selection by the gradient of a frozen network's loss."""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from monai.losses import DiceCELoss, DiceLoss
from torch import nn
from tqdm import tqdm

from common.apps.igs.report import plot_igs_search
from common.transforms.intensity.array import zscore_slices
from common.transforms.kspace.functional import line_spectrum, undersample_lines
from common.transforms.kspace.masks import line_mask, num_lines, save_line_pattern
from common.transforms.kspace.phase import apply_phase, phase_seed, smooth_phase
from common.utils.atomic_io import atomic_path

__all__ = [
    "FORWARD_MODELS",
    "slice_key",
    "igs_loss",
    "cache_line_spectra",
    "network_input",
    "mask_gradient",
    "IterativeGradientSampling",
]

logger = logging.getLogger(__name__)

Normalize = Callable[[torch.Tensor], torch.Tensor]


def igs_loss(name: str = "dice") -> nn.Module:
    """The search loss by name: ``"dice"`` (soft Dice on softmax, background included) or ``"dice_ce"``
    (0.75 Dice + 0.25 cross-entropy, the fine-tuning loss of the paper). Labels are class indices ``(B, 1, H, W)``."""
    if name == "dice":
        return DiceLoss(to_onehot_y=True, softmax=True)
    if name == "dice_ce":
        return DiceCELoss(to_onehot_y=True, softmax=True, lambda_dice=0.75, lambda_ce=0.25)
    raise ValueError(f"loss: expected 'dice' or 'dice_ce', found '{name}'")


FORWARD_MODELS = ("magnitude", "phase")


def slice_key(item: Mapping) -> str:
    """The text naming one slice (``"<patient>/<phase>/<slice>"``), which seeds its phase map."""
    return f"{item.get('patient', '')}/{item.get('phase', '')}/{item.get('slice', '')}"


def cache_line_spectra(
    items: Sequence[dict],
    pe_dim: int = -1,
    batch_size: int = 64,
    device: torch.device | str = "cpu",
    image_key: str = "image",
    label_key: str = "label",
    forward_model: str = "magnitude",
    phase_seed_base: int = 0,
    max_phase: float = math.pi,
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Batches of (:func:`~common.transforms.line_spectrum` of the images, complex64 ``(B, C, H, W)``, label
    ``(B, 1, H, W)``) on ``device``.

    The transform along the phase-encoding axis is all a line mask needs (see :mod:`common.transforms.kspace`), so it is
    computed once here and reused by every IGS iteration and every evaluated pattern.

    ``forward_model``: ``"magnitude"`` (the paper's setting: the magnitude image is acquired as it is, so its k-space
    is conjugate-symmetric and line ``+f`` duplicates line ``-f``) or ``"phase"`` (each slice is given a smooth,
    seeded phase map before the FFT, :func:`~common.transforms.smooth_phase` with peak ``max_phase`` and the seed
    :func:`~common.transforms.phase_seed` of its :func:`slice_key` and ``phase_seed_base``; the same slice gets the
    same phase for every pattern, so every pattern sees the same data). Full sampling gives the magnitude image
    under both models.
    """
    if forward_model not in FORWARD_MODELS:
        raise ValueError(f"forward_model: expected one of {FORWARD_MODELS}, found '{forward_model}'")
    batches = []
    for start in range(0, len(items), batch_size):
        chunk = items[start : start + batch_size]
        images = torch.stack([torch.as_tensor(np.asarray(d[image_key]), dtype=torch.float32) for d in chunk])
        labels = torch.stack([torch.as_tensor(np.asarray(d[label_key]), dtype=torch.float32) for d in chunk])
        if forward_model == "phase":
            height, width = images.shape[-2:]
            phases = torch.stack(
                [smooth_phase(height, width, phase_seed(slice_key(d), phase_seed_base), max_phase) for d in chunk]
            )
            images = apply_phase(images, phases[:, None])  # (B, C, H, W) complex: one phase map per slice
        batches.append((line_spectrum(images.to(device), pe_dim).to(torch.complex64), labels.to(device)))
    return batches


def network_input(
    spectrum: torch.Tensor, mask: torch.Tensor, pe_dim: int = -1, normalize: Normalize | None = zscore_slices
) -> torch.Tensor:
    """What the network sees for an acquisition with ``mask``: the zero-filled magnitude, then ``normalize``d
    (per-slice z-score, as in training: the scanner acquires the raw magnitude, normalisation comes after).

    ``spectrum`` complex ``(B, C, H, W)`` from :func:`cache_line_spectra` -> float ``(B, C, H, W)``.
    """
    image = undersample_lines(spectrum, mask, pe_dim)
    return image if normalize is None else normalize(image)


def mask_gradient(
    network: nn.Module,
    batches: Sequence[tuple[torch.Tensor, torch.Tensor]],
    mask: torch.Tensor,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    pe_dim: int = -1,
    amp: bool = False,
    normalize: Normalize | None = zscore_slices,
) -> tuple[torch.Tensor, float]:
    """``dLoss/dmask`` summed over all batches, and the mean batch loss, at the given line mask.

    ``mask`` ``(W,)`` or ``(C, W)``; the network is applied to the undersampled images as it is (call ``eval()`` and
    freeze it first). ``amp`` runs the network under autocast on CUDA; the FFTs stay in float32. ``normalize`` as in
    :func:`network_input`.
    """
    mask = mask.detach().clone().requires_grad_(True)
    total = 0.0
    device_type = mask.device.type
    for spectrum, label in batches:
        image = network_input(spectrum, mask, pe_dim, normalize)
        with torch.autocast(device_type, enabled=amp and device_type == "cuda"):
            loss = loss_fn(network(image).float(), label)
        loss.backward()
        total += float(loss.detach())
    return mask.grad.detach(), total / max(len(batches), 1)


class IterativeGradientSampling:
    """Greedy k-space line selection: add the unselected line(s) whose loss gradient is most negative.

    Starting from the centre line (or ``start``), each iteration accumulates ``dLoss/dm`` over all ``data`` through the
    frozen ``network`` at the current mask ``m``, then adds ``lines_per_iteration`` unselected lines with the most
    negative gradient, until the budget of the lowest acceleration. The pattern is written when its line count reaches
    each acceleration's budget (``width // acceleration``), so one run yields every pattern, and the order in which
    lines were added is kept. The state is saved after every iteration; a new run with the same ``output_dir``
    continues from it.

    Args:
        network: segmentation network pretrained on fully sampled images; ``(B, C, H, W)`` -> logits ``(B, K, H, W)``.
            It is put in eval mode and its parameters are frozen.
        data: slice dicts with ``image`` ``(C, H, W)`` (magnitude, before normalisation) and ``label``
            ``(1, H, W)`` (class indices).
        output_dir: where ``igs_x{acc}.npy``/``.json``, ``igs_state.json`` and ``igs_search.png`` go.
        accelerations: factors to write patterns for.
        loss: a name for :func:`igs_loss` or a callable ``(logits, label) -> scalar``.
        lines_per_iteration: lines added per iteration (1 as in the paper; more is faster and coarser).
        start: ``"center"`` (the single centre line), ``"center_block"`` (the highest acceleration's centre block)
            or a ``(W,)`` / ``(C, W)`` 0/1 mask.
        per_channel: one pattern per input channel (``(C, W)``), each channel adding its own lines.
        pe_dim: -1 (lines index W) or -2 (lines index H).
        batch_size: slices per gradient batch.
        device: where the search runs; the k-space of ``data`` is cached there.
        amp: autocast the network on CUDA (check that it keeps the ranking for your network).
        normalize: applied to each undersampled image before the network (default per-slice z-score, as the
            bundles train); ``None`` feeds the magnitude as it is.
        resume: continue from ``igs_state.json`` when present.
    """

    def __init__(
        self,
        network: nn.Module,
        data: Sequence[dict],
        output_dir: str | Path,
        accelerations: Sequence[float] = (16, 8, 4),
        loss: str | Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = "dice",
        lines_per_iteration: int = 1,
        start: str | torch.Tensor = "center",
        per_channel: bool = False,
        pe_dim: int = -1,
        batch_size: int = 32,
        device: str | torch.device = "cpu",
        amp: bool = False,
        normalize: Normalize | None = zscore_slices,
        resume: bool = True,
    ) -> None:
        if not data:
            raise ValueError("IterativeGradientSampling: expected at least one slice in data, found none")
        if lines_per_iteration < 1:
            raise ValueError(f"lines_per_iteration: expected >= 1, found {lines_per_iteration}")
        self.network = network
        self.data = data
        self.output_dir = Path(output_dir)
        self.device = torch.device(device)
        self.channels, height, width = np.asarray(data[0]["image"]).shape
        self.width = width if pe_dim == -1 else height
        self.budgets = sorted({num_lines(self.width, a): float(a) for a in accelerations}.items())
        self.loss_fn = igs_loss(loss) if isinstance(loss, str) else loss
        self.lines_per_iteration = lines_per_iteration
        self.start = start
        self.per_channel = per_channel
        self.pe_dim = pe_dim
        self.batch_size = batch_size
        self.amp = amp
        self.normalize = normalize
        self.resume = resume
        self.state_file = self.output_dir / "igs_state.json"

    def _start_orders(self) -> list[list[int]]:
        n_rows = self.channels if self.per_channel else 1
        if isinstance(self.start, str):
            if self.start == "center":
                lines = [self.width // 2]  # the k-space centre after fftshift
            elif self.start == "center_block":
                lines = line_mask("center", self.width, self.budgets[0][1]).nonzero().flatten().tolist()
            else:
                raise ValueError(f"start: expected 'center', 'center_block' or a mask, found '{self.start}'")
            return [list(lines) for _ in range(n_rows)]
        start = torch.as_tensor(self.start).reshape(-1, self.width)
        if start.shape[0] not in (1, n_rows):
            raise ValueError(f"start: expected {n_rows} pattern row(s) of width {self.width}, found {start.shape[0]}")
        return [start[min(r, start.shape[0] - 1)].nonzero().flatten().tolist() for r in range(n_rows)]

    def _mask(self, orders: list[list[int]], count: int) -> torch.Tensor:
        mask = torch.zeros(len(orders), self.width, device=self.device)
        for row, order in enumerate(orders):
            mask[row, order[:count]] = 1.0
        return mask if self.per_channel else mask[0]

    def _save_state(self, orders: list[list[int]], history: list[list[float]]) -> None:
        with atomic_path(self.state_file) as tmp:
            tmp.write_text(json.dumps({"width": self.width, "orders": orders, "history": history}))

    def _load_state(self) -> tuple[list[list[int]], list[list[float]]] | None:
        if not (self.resume and self.state_file.is_file()):
            return None
        state = json.loads(self.state_file.read_text())
        if state.get("width") != self.width:
            raise ValueError(
                f"{self.state_file}: expected an IGS state for width {self.width}, found "
                f"{state.get('width')}; delete it or choose another output_dir"
            )
        logger.info("resuming IGS from %s (%d lines)", self.state_file, len(state["orders"][0]))
        return state["orders"], state["history"]

    def _write_patterns(self, orders: list[list[int]], history: list[list[float]]) -> dict[float, Path]:
        loss_at = {int(n): loss for n, loss in history}
        written = {}
        for budget, acc in self.budgets:
            if len(orders[0]) < budget:
                continue
            info = {"acceleration": acc, "axis": self.pe_dim, "per_channel": self.per_channel, "method": "IGS"}
            written[acc] = save_line_pattern(
                self.output_dir / f"igs_x{acc:g}",
                self._mask(orders, budget).cpu(),
                order=orders[0][:budget] if not self.per_channel else None,
                orders=[o[:budget] for o in orders],
                search_loss=loss_at.get(budget),
                **info,
            )
        return written

    def run(self) -> dict[float, Path]:
        """Search to the largest budget; returns ``{acceleration: path of the .npy pattern}``."""
        self.network.eval().to(self.device)
        for p in self.network.parameters():
            p.requires_grad_(False)
        loaded = self._load_state()
        orders, history = loaded if loaded is not None else (self._start_orders(), [])
        target = self.budgets[-1][0]
        t0 = time.perf_counter()
        batches = cache_line_spectra(self.data, self.pe_dim, self.batch_size, self.device)
        logger.info("IGS: %d slices, width %d, budgets %s", len(self.data), self.width, dict(self.budgets))
        bar = tqdm(total=target, initial=len(orders[0]), desc="IGS lines", disable=None)
        while len(orders[0]) < target:
            count = len(orders[0])
            next_budget = min(b for b, _ in self.budgets if b > count)
            grad, loss = mask_gradient(
                self.network, batches, self._mask(orders, count), self.loss_fn, self.pe_dim, self.amp, self.normalize
            )
            history.append([count, loss])
            grad = grad.reshape(len(orders), self.width).cpu()
            k = min(self.lines_per_iteration, next_budget - count)
            for row, order in enumerate(orders):
                g = grad[row].clone()
                g[order] = float("inf")  # selected lines are never picked again
                order += torch.argsort(g, stable=True)[:k].tolist()
            self._save_state(orders, history)
            bar.update(k)
            bar.set_postfix(loss=f"{loss:.4f}")
            logger.info("IGS: %d/%d lines, search loss %.4f at %d lines", len(orders[0]), target, loss, count)
        bar.close()
        if not history or history[-1][0] < target:  # the loss at the final pattern
            loss = mask_gradient(
                self.network, batches, self._mask(orders, target), self.loss_fn, self.pe_dim, self.amp, self.normalize
            )[1]
            history.append([target, loss])
            self._save_state(orders, history)
        written = self._write_patterns(orders, history)
        plot_igs_search(orders[0], history, self.width, self.budgets, self.output_dir / "igs_search.png")
        logger.info("IGS search done in %.1f s: %s", time.perf_counter() - t0, {a: str(p) for a, p in written.items()})
        return written
