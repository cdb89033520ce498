"""Iterative gradient sampling (IGS): greedy k-space line selection by the gradient of a frozen network's loss."""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from common.apps.igs.comparison import CENTER_FRACTIONS, learned_pattern_file
from common.apps.igs.fingerprint import acquisition_settings, check_fingerprint, search_fingerprint, weights_digest
from common.apps.igs.objective import (
    FORWARD_MODELS,
    LossFn,
    Normalize,
    RankBatches,
    autocast_settings,
    cache_line_spectra,
    cache_rank_batches,
    igs_loss,
    mask_gradient,
    mask_loss,
    pick_ties,
    rank_lines,
)
from common.apps.igs.report import plot_channel_patterns, plot_igs_search
from common.transforms.intensity.array import zscore_slices
from common.transforms.kspace.masks import line_mask, load_line_pattern, num_lines, save_line_pattern
from common.utils.atomic_io import atomic_path
from common.utils.distributed import gather, is_main_process

__all__ = [
    "STARTS",
    "GUARDS",
    "REFINE_MODES",
    "IterativeGradientSampling",
]

logger = logging.getLogger(__name__)


STARTS = ("center", "center_block", "one_sided")

GUARDS = ("center", "one_sided", "equispaced", "random", "loupe")
"""Patterns a search result may be checked against at each budget (``loupe``: LOUPE's pattern in ``output_dir``)."""

REFINE_MODES = ("none", "nested", "per_budget")


class IterativeGradientSampling:
    """Greedy k-space line selection: add the unselected line(s) whose loss gradient is most negative.

    Starting from the centre line (or ``start``), each step accumulates ``dLoss/dm`` over the ``data`` (or a random
    subset of it) through the frozen ``network`` at the current mask ``m``, then adds the unselected line(s) with the
    most negative gradient (near-ties by :func:`rank_lines`: smaller ``|f|`` first, then the ``+f`` side), until the
    budget of the lowest acceleration. The pattern is written when its line count reaches each acceleration's budget
    (``width // acceleration``), so one run yields every pattern, and the order in which lines were added is kept. The
    state is saved after every step; a new run with the same ``output_dir`` continues from it if it was made with
    the same network weights, data and search settings (its ``fingerprint``), and refuses it otherwise.

    Never beaten on its own objective (``guards`` and ``refine``): when the growth reaches a budget, the search loss
    over all of ``data`` of the grown pattern is compared with that of each guard pattern at the same budget (the
    symmetric and one-sided centre blocks, fastMRI-style equispaced and random patterns drawn with ``guard_seeds``,
    LOUPE's pattern of this network and forward model where it exists in ``output_dir`` when the budget is reached:
    the sidecar's ``guard_losses`` name the guards used). With ``refine`` other than
    ``"none"`` the grown pattern is then improved by swaps: each swap step computes ``dLoss/dm`` once at the current
    pattern, ranks the (selected line out, unselected line in) pairs by the first-order change ``g_in - g_out`` and
    re-scores the best ``swap_candidates`` of them by the actual loss; the best is taken only if it lowers the loss,
    so a swap never makes the pattern worse. Up to ``max_swaps`` swaps per budget. ``"nested"`` swaps only the lines
    added since the previous budget (the x16 lines stay inside the x8 pattern, and so on); ``"per_budget"`` may swap
    any line. The best guard is refined the same way (it may swap any line) at the first budget, in ``"per_budget"``
    mode, and whenever it beats the refined search; the pattern kept at a budget is the one of lowest loss, so the
    returned pattern's loss is never above a guard's. A guard that wins a budget under ``"nested"`` breaks the
    nesting there: the sidecar says so (``nested``: whether the pattern holds the previous budget's lines).

    Outputs in ``output_dir``, named after ``name`` and ``forward_model`` so that searches live side by side:
    ``<name>_<forward_model>_x<acc>.npy`` + ``.json`` (:func:`~common.transforms.save_line_pattern`; the sidecar also
    holds ``fingerprint``, ``forward_model``, ``loss``, ``search_loss`` (over all of ``data``, at the pattern),
    ``source`` (``"search"``, or ``"guard:<name>"`` when a refined guard was best), ``nested``, ``swaps``,
    ``guard_losses`` (each guard's search loss at the budget, seeded ones as ``<name>_seed<s>``) and
    ``search_seconds``: wall-clock seconds spent until the pattern was final, the k-space caching and earlier
    resumed runs included),
    ``<name>_<forward_model>_state.json`` and ``<name>_<forward_model>_search.png``.

    Under ``torchrun`` (the process group joined, e.g. by :func:`common.utils.distributed.init_distributed`) each rank
    caches the k-space of its share of the batches of ``data`` only (:func:`~common.apps.igs.cache_rank_batches`; with
    ``subset_fraction`` < 1 every rank caches every slice, since a step's subset is drawn from all of them, and
    computes its share of the step's batches) and every gradient, lookahead, guard and swap loss is summed over the
    ranks batch by batch in float64 in the order of the batches (:class:`~common.apps.igs.RankBatches`): every rank
    sees the values one process computes, bit for bit on the same device, so it makes the same choices and the
    patterns are those of one process. Rank 0 writes the state, the patterns and the figures.

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
        guards: names from :data:`GUARDS` the pattern must not lose to at each budget (empty: none, the paper's).
        guard_seeds: the draws of the equispaced and random guards.
        center_fractions: centre fraction per acceleration of the equispaced and random guards (fastMRI's).
        refine: ``"none"`` (the paper's greedy growth), ``"nested"`` or ``"per_budget"`` swap refinement.
        swap_candidates: (out, in) pairs re-scored by their loss per swap step (per pattern row).
        max_swaps: swaps per budget and refined pattern.
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
        guards: Sequence[str] = (),
        guard_seeds: Sequence[int] = (0, 1, 2, 3, 4),
        center_fractions: Mapping[float, float] | None = None,
        refine: str = "none",
        swap_candidates: int = 8,
        max_swaps: int = 32,
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
        if set(guards) - set(GUARDS) or len(set(guards)) != len(guards):
            raise ValueError(f"guards: expected distinct names from {', '.join(GUARDS)}, found {list(guards)}")
        if refine not in REFINE_MODES:
            raise ValueError(f"refine: expected one of {', '.join(REFINE_MODES)}, found '{refine}'")
        if swap_candidates < 1 or max_swaps < 0:
            raise ValueError(
                f"swap_candidates, max_swaps: expected >= 1 and >= 0, found {swap_candidates} and {max_swaps}"
            )
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
        self.guards, self.guard_seeds = list(guards), [int(x) for x in guard_seeds]
        self.center_fractions = {float(k): float(v) for k, v in (center_fractions or CENTER_FRACTIONS).items()}
        missing = [a for _, a in self.budgets if a not in self.center_fractions]
        if missing and {"equispaced", "random"} & set(self.guards):
            raise ValueError(f"center_fractions: expected an entry for accelerations {missing}, found none")
        self.refine, self.swap_candidates, self.max_swaps = refine, int(swap_candidates), int(max_swaps)
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
            guards={
                "names": self.guards,
                "seeds": self.guard_seeds,
                "center_fractions": {f"{a:g}": f for a, f in sorted(self.center_fractions.items())},
            },
            refine={"mode": self.refine, "swap_candidates": self.swap_candidates, "max_swaps": self.max_swaps},
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
        if not is_main_process():
            return
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

    def _step_batches(
        self, flat: tuple[torch.Tensor, torch.Tensor] | None, batches: RankBatches, count: int
    ) -> RankBatches:
        """This rank's share of all batches, or of a fresh subset of the slices (of ``flat``, every slice) drawn for
        the step that starts at ``count`` lines."""
        if flat is None:
            return batches
        n = len(flat[0])
        rng = np.random.default_rng([self.subset_seed, count])
        chosen = np.sort(rng.choice(n, size=max(1, round(self.subset_fraction * n)), replace=False))
        share = RankBatches.deal(torch.as_tensor(chosen, device=self.device).split(self.batch_size))
        return share._replace(batches=[(flat[0].index_select(0, i), flat[1].index_select(0, i)) for i in share.batches])

    def _lookahead(
        self, orders: list[list[int]], row: int, candidates: list[int], k: int, batches: RankBatches
    ) -> list[int]:
        """The ``k`` candidates whose addition alone gives the lowest loss (ties: the gradient's order)."""
        losses = {}
        for line in candidates:
            trial = [list(o) for o in orders]
            trial[row].append(line)
            losses[line] = mask_loss(self.network, batches, self._mask(trial), self.loss_fn, *self._settings())
        logger.debug("IGS lookahead: %s", losses)
        return pick_ties(losses, k, self.tie_rtol, candidates.index)

    def _rows(self, lines: Sequence[int] | torch.Tensor) -> list[list[int]]:
        """Every pattern row's lines in acquisition order (``|f|`` from the centre, then the ``+f`` side), from a
        ``(W,)`` or ``(C, W)`` mask (a ``(W,)`` mask is every row's)."""
        mask = torch.as_tensor(lines).reshape(-1, self.width)
        n_rows = self.channels if self.per_channel else 1
        centre = self.width // 2
        return [
            sorted(
                mask[min(r, len(mask) - 1)].nonzero().flatten().tolist(), key=lambda i: (abs(i - centre), i < centre)
            )
            for r in range(n_rows)
        ]

    def _guard_orders(self, budget: int, acc: float) -> dict[str, list[list[int]]]:
        """The guard patterns at one budget, ``{name: lines per row}`` (``<name>_seed<s>`` for the seeded ones);
        LOUPE's only where its file in ``output_dir`` was made from this network's weights and forward model."""
        out = {}
        for name in self.guards:
            if name == "loupe":
                path = learned_pattern_file(self.output_dir, "loupe", self.forward_model, acc)
                sidecar = path.with_suffix(".json")
                if not (path.is_file() and sidecar.is_file()):
                    continue
                made = json.loads(sidecar.read_text()).get("fingerprint") or {}
                if (
                    made.get("weights") != weights_digest(self.network)
                    or made.get("forward_model") != self.forward_model
                ):
                    logger.info("IGS: %s was made from other weights or another forward model, not a guard", path)
                    continue
                out[name] = self._rows(load_line_pattern(path, width=self.width))
            elif name in ("equispaced", "random"):
                for seed in self.guard_seeds:
                    mask = line_mask(name, self.width, acc, self.center_fractions[float(acc)], seed=seed)
                    out[f"{name}_seed{seed}"] = self._rows(mask)
            else:
                out[name] = self._rows(line_mask(name, self.width, acc))
        bad = {k: [len(r) for r in v] for k, v in out.items() if any(len(r) != budget for r in v)}
        if bad:
            raise ValueError(f"guards at x{acc:g}: expected {budget} lines per pattern row, found {bad}")
        return out

    def _swap(
        self, orders: list[list[int]], fixed: int, loss: float, batches: RankBatches
    ) -> tuple[list[list[int]], float, int]:
        """Improve ``orders`` by loss-lowering swaps (the first ``fixed`` lines of each row stay); returns the
        orders, their loss over ``batches`` and the number of swaps made."""
        settings = self._settings()
        swaps = 0
        while swaps < self.max_swaps:
            grad, _ = mask_gradient(self.network, batches, self._mask(orders), self.loss_fn, *settings)
            grad = grad.reshape(len(orders), self.width).cpu().double()
            best: tuple[float, list[list[int]]] | None = None
            for row, order in enumerate(orders):
                outs = sorted(order[fixed:], key=lambda i: -float(grad[row, i]))[: self.swap_candidates]
                ins = rank_lines(grad[row], order, self.swap_candidates, self.tie_rtol)
                pairs = sorted((float(grad[row, j] - grad[row, i]), i, j) for i in outs for j in ins)
                for _, out_line, in_line in pairs[: self.swap_candidates]:
                    trial = [list(o) for o in orders]
                    trial[row].remove(out_line)
                    trial[row].append(in_line)
                    value = mask_loss(self.network, batches, self._mask(trial), self.loss_fn, *settings)
                    if value < (loss if best is None else best[0]) - 1e-7:
                        best = (value, trial)
            if best is None:
                break
            loss, orders = best
            swaps += 1
            logger.info("IGS: swap %d at %d lines, search loss %.4f", swaps, len(orders[0]), loss)
        return orders, loss, swaps

    def _finalise(
        self,
        orders: list[list[int]],
        budget: int,
        acc: float,
        previous: list[list[int]] | None,
        batches: RankBatches,
    ) -> dict[str, Any]:
        """The pattern kept at ``budget``: the grown ``orders`` refined, or a refined guard of lower loss (see the
        class docstring); ``previous`` is the pattern kept at the previous budget (None at the first)."""
        settings = self._settings()
        loss = mask_loss(self.network, batches, self._mask(orders), self.loss_fn, *settings)
        guards = self._guard_orders(budget, acc)
        guard_losses = {
            name: mask_loss(self.network, batches, self._mask(rows), self.loss_fn, *settings)
            for name, rows in guards.items()
        }
        swaps, source = 0, "search"
        if self.refine != "none":
            fixed = len(previous[0]) if self.refine == "nested" and previous is not None else 0
            orders, loss, swaps = self._swap(orders, fixed, loss, batches)
        if guard_losses:
            name = min(guard_losses, key=lambda k: (guard_losses[k], k))
            g_orders, g_loss, g_swaps = guards[name], guard_losses[name], 0
            if self.refine != "none" and (previous is None or self.refine == "per_budget" or g_loss < loss):
                g_orders, g_loss, g_swaps = self._swap(g_orders, 0, g_loss, batches)
            if g_loss < loss:
                orders, loss, swaps, source = g_orders, g_loss, g_swaps, f"guard:{name}"
                logger.info("IGS x%g: the %s pattern (refined) has the lower search loss, %.4f; kept", acc, name, loss)
        nested = previous is None or all(set(p) <= set(o) for p, o in zip(previous, orders))
        return {
            "orders": orders,
            "loss": loss,
            "source": source,
            "nested": nested,
            "swaps": swaps,
            "guard_losses": guard_losses,
        }

    def _write_patterns(self, state: dict[str, Any]) -> dict[float, Path]:
        written = {}
        for budget, acc in self.budgets:
            final = state["final"].get(str(budget))
            if final is None:
                continue
            orders = final["orders"]
            written[acc] = save_line_pattern(
                self.output_dir / f"{self.prefix}_x{acc:g}",
                self._mask(orders).cpu(),
                order=orders[0] if not self.per_channel else None,
                orders=orders,
                acceleration=acc,
                axis=self.pe_dim,
                per_channel=self.per_channel,
                method="IGS",
                forward_model=self.forward_model,
                loss=self.loss_name,
                search_loss=final["loss"],
                source=final["source"],
                nested=final["nested"],
                swaps=final["swaps"],
                guard_losses=final["guard_losses"],
                search_seconds=final["seconds"],
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
            "final": {},  # per budget (as text): the pattern kept there and how it was chosen
        }
        orders, history, seconds, final = state["orders"], state["history"], state["seconds"], state["final"]
        before = seconds[-1][1] if seconds else 0.0  # search time of earlier runs
        target = self.budgets[-1][0]
        cache = {
            "forward_model": self.forward_model,
            "phase_seed_base": self.phase_seed_base,
            "max_phase": self.max_phase,
        }
        flat = None
        if self.subset_fraction < 1:  # a step's subset is drawn from every slice: every rank caches them all
            every = cache_line_spectra(self.data, self.pe_dim, self.batch_size, self.device, **cache)
            flat = (torch.cat([s for s, _ in every]), torch.cat([y for _, y in every]))
            batches = RankBatches.deal(every)
        else:
            batches = cache_rank_batches(self.data, self.pe_dim, self.batch_size, self.device, **cache)
        logger.info(
            "IGS (%s): %d slices, width %d, budgets %s", self.prefix, len(self.data), self.width, dict(self.budgets)
        )
        settings = self._settings()
        bar = tqdm(total=target, initial=len(orders[0]), desc="IGS lines", disable=None if is_main_process() else True)
        previous = None
        for budget, acc in self.budgets:
            if str(budget) in final:
                previous = orders = final[str(budget)]["orders"]
                continue
            while len(orders[0]) < budget:
                count = len(orders[0])
                step = self._step_batches(flat, batches, count)
                grad, loss = mask_gradient(self.network, step, self._mask(orders, count), self.loss_fn, *settings)
                history.append([count, loss])
                grad = grad.reshape(len(orders), self.width).cpu()
                k = min(1 if count < self.exact_lines else self.lines_per_iteration, budget - count)
                current = [list(o) for o in orders]  # every row's lines are chosen at the same mask
                for row, order in enumerate(orders):
                    ranked = rank_lines(grad[row], order, max(k, self.lookahead), self.tie_rtol)
                    order += self._lookahead(current, row, ranked, k, step) if self.lookahead else ranked[:k]
                seconds.append([len(orders[0]), before + time.perf_counter() - t0])
                self._save_state(state)
                bar.update(k)
                bar.set_postfix(loss=f"{loss:.4f}")
                logger.info("IGS: %d/%d lines, search loss %.4f at %d lines", len(orders[0]), target, loss, count)
            kept = self._finalise(orders, budget, acc, previous, batches)
            history.append([budget, kept["loss"]])
            kept["seconds"] = before + time.perf_counter() - t0
            seconds.append([budget, kept["seconds"]])
            final[str(budget)] = kept
            previous = orders = state["orders"] = [list(o) for o in kept["orders"]]
            self._save_state(state)
            logger.info("IGS x%g: search loss %.4f (%s, %d swaps)", acc, kept["loss"], kept["source"], kept["swaps"])
        bar.close()
        if is_main_process():
            written = self._write_patterns(state)
            kept_lines = {budget: final[str(budget)]["orders"][0] for budget, _ in self.budgets}
            plot_igs_search(
                orders[0], history, self.width, self.budgets, self.output_dir / f"{self.prefix}_search.png", kept_lines
            )
            if len(orders) > 1:
                masks = {acc: self._mask(final[str(budget)]["orders"]) for budget, acc in self.budgets}
                plot_channel_patterns(masks, self.output_dir / f"{self.prefix}_channels.png", self.channel_names)
        written = gather([written] if is_main_process() else [])[0]  # every rank waits for rank 0's files
        logger.info("IGS search done in %.1f s: %s", time.perf_counter() - t0, {a: str(p) for a, p in written.items()})
        return written
