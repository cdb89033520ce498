"""Iterative gradient sampling (IGS): greedy k-space line selection by the gradient of a frozen network's loss."""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from common.apps.igs.fingerprint import acquisition_settings, check_fingerprint, search_fingerprint
from common.apps.igs.objective import (
    FORWARD_MODELS,
    Batches,
    LossFn,
    Normalize,
    autocast_settings,
    cache_line_spectra,
    igs_loss,
    mask_gradient,
    mask_loss,
    pick_ties,
    rank_lines,
)
from common.apps.igs.report import plot_channel_patterns, plot_igs_search
from common.transforms.intensity.array import zscore_slices
from common.transforms.kspace.masks import line_mask, num_lines, save_line_pattern
from common.utils.atomic_io import atomic_path

__all__ = [
    "STARTS",
    "IterativeGradientSampling",
]

logger = logging.getLogger(__name__)


STARTS = ("center", "center_block", "one_sided")


class IterativeGradientSampling:
    """Greedy k-space line selection: add the unselected line(s) whose loss gradient is most negative.

    Starting from the centre line (or ``start``), each step accumulates ``dLoss/dm`` over the ``data`` (or a random
    subset of it) through the frozen ``network`` at the current mask ``m``, then adds the unselected line(s) with the
    most negative gradient (near-ties by :func:`rank_lines`: smaller ``|f|`` first, then the ``+f`` side), until the
    budget of the lowest acceleration. The pattern is written when its line count reaches each acceleration's budget
    (``width // acceleration``), so one run yields every pattern, and the order in which lines were added is kept. The
    state is saved after every step; a new run with the same ``output_dir`` continues from it if it was made with
    the same network weights, data and search settings (its ``fingerprint``), and refuses it otherwise.

    Outputs in ``output_dir``, named after ``name`` and ``forward_model`` so that searches live side by side:
    ``<name>_<forward_model>_x<acc>.npy`` + ``.json`` (:func:`~common.transforms.save_line_pattern`; the sidecar also
    holds ``fingerprint``, ``forward_model``, ``loss``, ``search_loss`` and ``search_seconds``: wall-clock seconds
    spent until the pattern's line count was reached, the k-space caching and earlier resumed runs included),
    ``<name>_<forward_model>_state.json`` and ``<name>_<forward_model>_search.png``.

    Args:
        network: segmentation network pretrained on fully sampled images; ``(B, C, H, W)`` -> logits ``(B, K, H, W)``.
            It is put in eval mode on ``device`` (channels-last on CUDA) and its parameters are frozen.
        data: slice dicts with ``image`` ``(C, H, W)`` (magnitude, before normalisation), ``label`` ``(1, H, W)``
            (class indices) and, for the phase model, ``patient`` / ``phase`` / ``slice`` (:func:`slice_key`).
        output_dir: where the patterns, the state and the figure go.
        accelerations: factors to write patterns for.
        loss: a name for :func:`igs_loss` or a callable ``(logits, label) -> scalar``. The bundle's default is
            ``"dice_pooled"``: the original's loss, and like the per-volume Dice the comparison reports it does not
            give a slice in which a class is absent a term of its own.
        forward_model: ``"magnitude"`` (the paper's) or ``"phase"`` (a smooth seeded phase per slice, the bundle's
            default for its synthetic data), see :func:`cache_line_spectra`; ``phase_seed_base``, ``max_phase`` too.
        lines_per_iteration: lines added per step once ``exact_lines`` lines are selected (1 as in the paper; more
            is faster and coarser). A step never passes the next budget.
        exact_lines: up to this many selected lines (start included), one line per step.
        start: ``"center"`` (the single centre line), ``"center_block"`` (the highest acceleration's centre block),
            ``"one_sided"`` (the highest acceleration's one-sided centre block: the centre line and the next lines on
            the ``+f`` side) or a ``(W,)`` / ``(C, W)`` 0/1 mask.
        lookahead: 0, or re-score the best ``max(lookahead, k)`` candidates of each step (``k`` lines added) by the
            loss after adding each one alone (a forward pass over the step's data per candidate, no backward) and
            add the ``k`` with the lowest loss (ties within ``tie_rtol`` keep the gradient's order).
        subset_fraction: each step's gradient from ``round(subset_fraction * len(data))`` slices drawn afresh per
            step (seeded by ``subset_seed`` and the line count, so a resumed search draws the same); 1 uses all.
        tie_rtol: relative tolerance of :func:`rank_lines`.
        per_channel: one pattern per input channel (``(C, W)``), each channel adding its own lines; with two or more
            channels the run also draws them all (``<name>_<forward_model>_channels.png``).
        channel_names: the ``C`` channel names that figure's rows show (None: ``channel 0`` ...).
        pe_dim: -1 (lines index W) or -2 (lines index H).
        batch_size: slices per network pass: a memory and speed setting (32 on a CPU; 128-256 on a GPU with 40 GB or
            more, with ``amp``).
        loss_batch: slices per loss evaluation, a divisor of ``batch_size`` (None: ``batch_size``); keep it fixed
            (32, the original's batch) when changing ``batch_size`` so that ``dice_pooled`` keeps its objective.
        device: where the search runs; the k-space of ``data`` is cached there.
        amp: mixed precision of the network passes (:func:`autocast_settings`: bfloat16 where supported, else float16
            with a constant loss scale).
        normalize: applied to each undersampled image before the network (default per-slice z-score, as the
            bundles train); ``None`` feeds the magnitude as it is.
        resume: continue from the state file when present.
        name: prefix of the output files.
    """

    def __init__(
        self,
        network: nn.Module,
        data: Sequence[dict],
        output_dir: str | Path,
        accelerations: Sequence[float] = (16, 8, 4),
        loss: str | LossFn = "dice_pooled",
        forward_model: str = "magnitude",
        lines_per_iteration: int = 1,
        exact_lines: int = 0,
        start: str | torch.Tensor = "center",
        lookahead: int = 0,
        subset_fraction: float = 1.0,
        subset_seed: int = 0,
        tie_rtol: float = 1e-4,
        per_channel: bool = False,
        channel_names: Sequence[str] | None = None,
        pe_dim: int = -1,
        batch_size: int = 32,
        loss_batch: int | None = None,
        device: str | torch.device = "cpu",
        amp: bool | str = False,
        normalize: Normalize | None = zscore_slices,
        resume: bool = True,
        phase_seed_base: int = 0,
        max_phase: float = math.pi,
        name: str = "igs",
    ) -> None:
        if not data:
            raise ValueError("IterativeGradientSampling: expected at least one slice in data, found none")
        if lines_per_iteration < 1:
            raise ValueError(f"lines_per_iteration: expected >= 1, found {lines_per_iteration}")
        if exact_lines < 0:
            raise ValueError(f"exact_lines: expected >= 0, found {exact_lines}")
        if lookahead < 0:
            raise ValueError(f"lookahead: expected >= 0 candidates, found {lookahead}")
        if not 0.0 < subset_fraction <= 1.0:
            raise ValueError(f"subset_fraction: expected a fraction in (0, 1], found {subset_fraction}")
        if tie_rtol < 0:
            raise ValueError(f"tie_rtol: expected >= 0, found {tie_rtol}")
        if forward_model not in FORWARD_MODELS:
            raise ValueError(f"forward_model: expected one of {', '.join(FORWARD_MODELS)}, found '{forward_model}'")
        if isinstance(start, str) and start not in STARTS:
            raise ValueError(f"start: expected one of {', '.join(STARTS)} or a 0/1 mask, found '{start}'")
        if batch_size < 1:
            raise ValueError(f"batch_size: expected >= 1, found {batch_size}")
        if loss_batch is not None and (loss_batch < 1 or batch_size % loss_batch):
            raise ValueError(f"loss_batch: expected a divisor of batch_size {batch_size}, found {loss_batch}")
        autocast_settings("cpu", amp)  # validates amp
        self.network = network
        self.data = data
        self.output_dir = Path(output_dir)
        self.device = torch.device(device)
        self.channels, height, width = np.asarray(data[0]["image"]).shape
        self.width = width if pe_dim == -1 else height
        self.budgets = sorted({num_lines(self.width, a): float(a) for a in accelerations}.items())
        self.loss_name = loss if isinstance(loss, str) else getattr(loss, "__qualname__", type(loss).__qualname__)
        self.loss_fn = igs_loss(loss) if isinstance(loss, str) else loss
        self.forward_model = forward_model
        self.phase_seed_base, self.max_phase = int(phase_seed_base), float(max_phase)
        self.lines_per_iteration, self.exact_lines = int(lines_per_iteration), int(exact_lines)
        self.start = start
        self.lookahead = int(lookahead)
        self.subset_fraction, self.subset_seed = float(subset_fraction), int(subset_seed)
        self.tie_rtol = float(tie_rtol)
        self.per_channel = per_channel
        self.channel_names = channel_names
        self.pe_dim = pe_dim
        self.batch_size = int(batch_size)
        self.loss_batch = loss_batch
        self.amp = amp
        self.normalize = normalize
        self.resume = resume
        self.prefix = f"{name}_{forward_model}"
        self.state_file = self.output_dir / f"{self.prefix}_state.json"
        self._start_orders()  # validates a start mask

    def _start_orders(self) -> list[list[int]]:
        n_rows = self.channels if self.per_channel else 1
        if isinstance(self.start, str):
            if self.start == "center":
                lines = [self.width // 2]  # the k-space centre after fftshift
            else:  # the centred or the one-sided (partial-Fourier) block of the highest acceleration
                kind = "center" if self.start == "center_block" else "one_sided"
                lines = line_mask(kind, self.width, self.budgets[0][1]).nonzero().flatten().tolist()
            return [list(lines) for _ in range(n_rows)]
        start = torch.as_tensor(self.start).reshape(-1, self.width)
        if start.shape[0] not in (1, n_rows):
            raise ValueError(f"start: expected {n_rows} pattern row(s) of width {self.width}, found {start.shape[0]}")
        return [start[min(r, start.shape[0] - 1)].nonzero().flatten().tolist() for r in range(n_rows)]

    def fingerprint(self) -> dict[str, Any]:
        """What this search's state and patterns are stamped with (:func:`~common.apps.igs.search_fingerprint`)."""
        start = self.start if isinstance(self.start, str) else self._start_orders()
        return search_fingerprint(
            self.network,
            self.data,
            loss=self.loss_name,
            loss_batch=self.loss_batch or self.batch_size,
            **acquisition_settings(self.forward_model, self.phase_seed_base, self.max_phase, self.normalize),
            start=start,
            lines_per_iteration=self.lines_per_iteration,
            exact_lines=self.exact_lines,
            lookahead=self.lookahead,
            subset={"fraction": self.subset_fraction, "seed": self.subset_seed},
            tie_rtol=self.tie_rtol,
            per_channel=self.per_channel,
            pe_dim=self.pe_dim,
        )

    def _mask(self, orders: list[list[int]], count: int | None = None) -> torch.Tensor:
        """The ``(W,)`` (or per channel ``(C, W)``) 0/1 mask of the first ``count`` lines of each order (None: all)."""
        mask = torch.zeros(len(orders), self.width, device=self.device)
        for row, order in enumerate(orders):
            mask[row, order[:count]] = 1.0
        return mask if self.per_channel else mask[0]

    def _settings(self) -> tuple[int, bool | str, Normalize | None, int | None]:
        """``pe_dim, amp, normalize, loss_batch`` as :func:`mask_gradient` and :func:`mask_loss` take them."""
        return self.pe_dim, self.amp, self.normalize, self.loss_batch

    def _save_state(self, state: dict[str, Any]) -> None:
        with atomic_path(self.state_file) as tmp:
            tmp.write_text(json.dumps(state))

    def _load_state(self, fingerprint: dict[str, Any]) -> dict[str, Any] | None:
        if not (self.resume and self.state_file.is_file()):
            return None
        state = json.loads(self.state_file.read_text())
        if state.get("width") != self.width:
            raise ValueError(
                f"{self.state_file}: expected an IGS state for width {self.width}, found "
                f"{state.get('width')}; delete it or choose another output_dir"
            )
        check_fingerprint(state.get("fingerprint"), fingerprint, self.state_file)
        logger.info("resuming IGS from %s (%d lines)", self.state_file, len(state["orders"][0]))
        return state

    def _step_batches(self, flat: tuple[torch.Tensor, torch.Tensor], batches: Batches, count: int) -> Batches:
        """All batches, or a fresh subset of the slices drawn for the step that starts at ``count`` lines."""
        if self.subset_fraction >= 1.0:
            return batches
        n = len(flat[0])
        rng = np.random.default_rng([self.subset_seed, count])
        chosen = np.sort(rng.choice(n, size=max(1, round(self.subset_fraction * n)), replace=False))
        index = torch.as_tensor(chosen, device=self.device)
        return [(flat[0].index_select(0, i), flat[1].index_select(0, i)) for i in index.split(self.batch_size)]

    def _lookahead(
        self, orders: list[list[int]], row: int, candidates: list[int], k: int, batches: Batches
    ) -> list[int]:
        """The ``k`` candidates whose addition alone gives the lowest loss (ties: the gradient's order)."""
        losses = {}
        for line in candidates:
            trial = [list(o) for o in orders]
            trial[row].append(line)
            losses[line] = mask_loss(self.network, batches, self._mask(trial), self.loss_fn, *self._settings())
        logger.debug("IGS lookahead: %s", losses)
        return pick_ties(losses, k, self.tie_rtol, candidates.index)

    def _write_patterns(self, state: dict[str, Any]) -> dict[float, Path]:
        orders = state["orders"]
        loss_at = {int(n): loss for n, loss in state["history"]}
        written = {}
        for budget, acc in self.budgets:
            if len(orders[0]) < budget:
                continue
            seconds = next((s for n, s in state["seconds"] if n >= budget), None)
            written[acc] = save_line_pattern(
                self.output_dir / f"{self.prefix}_x{acc:g}",
                self._mask(orders, budget).cpu(),
                order=orders[0][:budget] if not self.per_channel else None,
                orders=[o[:budget] for o in orders],
                acceleration=acc,
                axis=self.pe_dim,
                per_channel=self.per_channel,
                method="IGS",
                forward_model=self.forward_model,
                loss=self.loss_name,
                search_loss=loss_at.get(budget),
                search_seconds=seconds,
                fingerprint=state["fingerprint"],
            )
        return written

    def run(self) -> dict[float, Path]:
        """Search to the largest budget; returns ``{acceleration: path of the .npy pattern}``."""
        t0 = time.perf_counter()
        self.network.eval().to(self.device)
        if self.device.type == "cuda":
            self.network.to(memory_format=torch.channels_last)
        for p in self.network.parameters():
            p.requires_grad_(False)
        fingerprint = self.fingerprint()
        orders = self._start_orders()
        state = self._load_state(fingerprint) or {
            "width": self.width,
            "fingerprint": fingerprint,
            "orders": orders,
            "history": [],
            "seconds": [[len(orders[0]), 0.0]],  # [line count, search seconds when it was reached]
        }
        orders, history, seconds = state["orders"], state["history"], state["seconds"]
        before = seconds[-1][1] if seconds else 0.0  # search time of earlier runs
        target = self.budgets[-1][0]
        batches = cache_line_spectra(
            self.data,
            self.pe_dim,
            self.batch_size,
            self.device,
            forward_model=self.forward_model,
            phase_seed_base=self.phase_seed_base,
            max_phase=self.max_phase,
        )
        flat = (
            (torch.cat([s for s, _ in batches]), torch.cat([y for _, y in batches]))
            if self.subset_fraction < 1
            else None
        )
        logger.info(
            "IGS (%s): %d slices, width %d, budgets %s", self.prefix, len(self.data), self.width, dict(self.budgets)
        )
        settings = self._settings()
        bar = tqdm(total=target, initial=len(orders[0]), desc="IGS lines", disable=None)
        while len(orders[0]) < target:
            count = len(orders[0])
            next_budget = min(b for b, _ in self.budgets if b > count)
            step = self._step_batches(flat, batches, count)
            grad, loss = mask_gradient(self.network, step, self._mask(orders, count), self.loss_fn, *settings)
            history.append([count, loss])
            grad = grad.reshape(len(orders), self.width).cpu()
            k = min(1 if count < self.exact_lines else self.lines_per_iteration, next_budget - count)
            current = [list(o) for o in orders]  # every row's lines are chosen at the same mask
            for row, order in enumerate(orders):
                ranked = rank_lines(grad[row], order, max(k, self.lookahead), self.tie_rtol)
                order += self._lookahead(current, row, ranked, k, step) if self.lookahead else ranked[:k]
            seconds.append([len(orders[0]), before + time.perf_counter() - t0])
            self._save_state(state)
            bar.update(k)
            bar.set_postfix(loss=f"{loss:.4f}")
            logger.info("IGS: %d/%d lines, search loss %.4f at %d lines", len(orders[0]), target, loss, count)
        bar.close()
        if not history or history[-1][0] < target:  # the loss at the final pattern (over all slices)
            loss = mask_loss(self.network, batches, self._mask(orders, target), self.loss_fn, *settings)
            history.append([target, loss])
            self._save_state(state)
        written = self._write_patterns(state)
        plot_igs_search(orders[0], history, self.width, self.budgets, self.output_dir / f"{self.prefix}_search.png")
        if len(orders) > 1:
            masks = {acc: self._mask(orders, budget) for budget, acc in self.budgets}
            plot_channel_patterns(masks, self.output_dir / f"{self.prefix}_channels.png", self.channel_names)
        logger.info("IGS search done in %.1f s: %s", time.perf_counter() - t0, {a: str(p) for a, p in written.items()})
        return written
