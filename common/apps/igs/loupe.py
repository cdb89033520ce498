"""LOUPE (Bahadir et al.) for k-space lines through a frozen segmentation network, as the IGS authors ran it."""

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
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from common.apps.igs.fingerprint import acquisition_settings, check_fingerprint, search_fingerprint
from common.apps.igs.objective import (
    FORWARD_MODELS,
    Normalize,
    RankBatches,
    autocast_settings,
    cache_line_spectra,
    igs_loss,
    mask_loss,
    network_input,
    network_logits,
)
from common.apps.igs.report import plot_loupe_loss
from common.transforms.intensity.array import zscore_slices
from common.transforms.kspace.functional import check_pe_dim
from common.transforms.kspace.masks import num_lines, save_line_pattern
from common.utils.atomic_io import atomic_path
from common.utils.distributed import all_reduce_sum, barrier, is_distributed, is_main_process, rank_and_world, shard

__all__ = [
    "PROB_SLOPE",
    "SAMPLE_SLOPE",
    "CLIP_NORM",
    "triangle_logits",
    "renormalize_probability",
    "relaxed_line_mask",
    "top_lines",
    "RelaxedLineMask",
    "LOUPE",
]

logger = logging.getLogger(__name__)


PROB_SLOPE = 5.0  # p = sigmoid(PROB_SLOPE * theta)
SAMPLE_SLOPE = 200.0  # relaxed mask = sigmoid(SAMPLE_SLOPE * (p_alpha - u))
CLIP_NORM = 1.0  # gradient-norm clip on theta before every Adam step
LOSS = "dice_pooled"  # igs_loss name: the authors' batch-pooled soft Dice, as the IGS search's default
STATE_KEYS = ("fingerprint", "acceleration", "epoch", "theta", "optimizer", "generator", "loss_history", "seconds")


def triangle_logits(width: int) -> torch.Tensor:
    """The starting logits: a triangle over the lines, 0 at both edges and 1 at the centre line ``width // 2``.

    ``theta[i] = i / c`` for ``i <= c`` and ``(width - 1 - i) / (width - 1 - c)`` for ``i > c``, ``c = width // 2``
    (float32 ``(width,)``, ``width >= 3``). The authors' two ``linspace`` halves reach 1 at both ``c - 1`` and ``c``
    for an even width; here only the k-space centre ``c`` (as fftshift puts it) starts at 1.
    """
    if width < 3:
        raise ValueError(f"width: expected at least 3 phase-encoding lines, found {width}")
    i = torch.arange(width, dtype=torch.float64)
    c = width // 2
    theta = torch.where(i <= c, i / c, (width - 1 - i) / (width - 1 - c))
    return theta.float()


def renormalize_probability(p: torch.Tensor, alpha: float) -> torch.Tensor:
    """Rescale line probabilities so that their mean is exactly ``alpha`` (LOUPE's sparsity renormalisation).

    With ``m = mean(p)`` over the last axis (each row on its own):

    - ``m >= alpha``: ``p' = p * alpha / m``  (scale the probabilities down);
    - ``m < alpha``:  ``p' = 1 - (1 - p) * (1 - alpha) / (1 - m)``  (scale the complements down).

    Both keep ``p'`` in ``[0, 1]`` and give ``mean(p') = alpha`` (Bahadir et al., IPMI 2019 / IEEE TCI 2020, the
    "rescale probability map" step; the IGS authors' branch tests ``m >= alpha`` as here). Branch-free (no host sync),
    differentiable in ``p`` (the mean couples every line). ``p`` ``(..., W)`` in ``[0, 1]``, ``alpha`` in ``(0, 1]``.
    """
    if not 0.0 < alpha <= 1.0:
        raise ValueError(f"alpha: expected a sparsity in (0, 1], found {alpha}")
    m = p.mean(dim=-1, keepdim=True)
    tiny = torch.finfo(p.dtype).tiny
    down = p * (alpha / m.clamp_min(tiny))
    up = 1 - (1 - p) * ((1 - alpha) / (1 - m).clamp_min(tiny))  # clamps only touch the branch not taken
    return torch.where(m >= alpha, down, up)


def relaxed_line_mask(theta: torch.Tensor, alpha: float, u: torch.Tensor) -> torch.Tensor:
    """LOUPE's relaxed sample: ``sigmoid(SAMPLE_SLOPE * (renormalize(sigmoid(PROB_SLOPE * theta), alpha) - u))``.

    ``theta`` ``(W,)`` or ``(C, W)`` logits, ``u`` uniform draws in ``[0, 1)`` of the same shape -> mask of the same
    shape with values in ``(0, 1)``, about 1 where ``p' > u``; differentiable in ``theta``.
    """
    p = renormalize_probability(torch.sigmoid(PROB_SLOPE * theta), alpha)
    return torch.sigmoid(SAMPLE_SLOPE * (p - u))


def top_lines(theta: torch.Tensor, n: int) -> tuple[torch.Tensor, list[list[int]]]:
    """The binary pattern of the ``n`` lines with the largest logits in each row, and each row's lines in rank order.

    Ties are broken deterministically: the line nearer the centre ``W // 2`` first, then the lower index.
    ``theta`` ``(W,)`` or ``(C, W)`` -> (float32 0/1 mask of the same shape on the CPU, ``C`` (or 1) lists of ``n``
    indices).
    """
    rows = np.atleast_2d(theta.detach().cpu().double().numpy())
    width = rows.shape[-1]
    if not 1 <= n <= width:
        raise ValueError(f"n: expected 1 to {width} lines, found {n}")
    index = np.arange(width)
    distance = np.abs(index - width // 2)
    orders = [np.lexsort((index, distance, -row))[:n].tolist() for row in rows]  # last key sorts first
    mask = np.zeros_like(rows, dtype=np.float32)
    for r, order in enumerate(orders):
        mask[r, order] = 1.0
    mask_t = torch.from_numpy(mask)
    return (mask_t if theta.ndim == 2 else mask_t[0]), orders


class RelaxedLineMask(nn.Module):
    """LOUPE's trainable part: the line logits ``theta`` (the parameter a ``DistributedDataParallel`` wrapper
    synchronises) and the relaxed sample :func:`relaxed_line_mask` at sparsity ``alpha``.

    Args:
        theta: the starting logits ``(W,)`` or ``(C, W)``.
        alpha: the sparsity ``1 / acceleration``.
    """

    def __init__(self, theta: torch.Tensor, alpha: float) -> None:
        super().__init__()
        self.theta = nn.Parameter(theta.detach().clone())
        self.alpha = float(alpha)

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        """``u`` uniform draws in ``[0, 1)`` of ``theta``'s shape -> the relaxed mask of that shape."""
        return relaxed_line_mask(self.theta, self.alpha, u)


class LOUPE:
    """LOUPE line patterns for a frozen segmentation network, one independent optimisation per acceleration.

    For each acceleration ``R`` (sparsity ``alpha = 1 / R``) one logit per line ``theta`` (per channel with
    ``per_channel``) starts as :func:`triangle_logits`. Every batch of slices draws one ``u ~ U[0, 1)`` per line
    (shared by the slices of the batch) and feeds the frozen ``network`` with :func:`~common.apps.igs.network_input`
    of the :func:`relaxed_line_mask`; the batch-pooled soft Dice (:func:`~common.apps.igs.igs_loss`
    ``"dice_pooled"``, the IGS search's default loss: background included, smoothing ``1e-7`` in the denominator
    only) is minimised over ``theta`` with Adam (``lr``, no weight decay) after clipping the gradient norm to
    ``CLIP_NORM``. Slices are reshuffled each epoch. The final pattern is :func:`top_lines` of ``theta`` with
    ``width // R`` lines (:func:`num_lines`).

    Randomness (batch order, draws) comes from a local ``torch.Generator`` seeded with ``seed`` afresh for each
    acceleration, so a pattern does not depend on which other accelerations ran; the global RNG is untouched.

    Writes ``loupe_<forward_model>_x<R>.npy`` and its JSON sidecar (:func:`~common.transforms.save_line_pattern`:
    ``method="LOUPE"``, ``acceleration``, ``epochs``, ``train_loss`` (mean relaxed loss of the last epoch),
    ``search_loss`` (the loss at the final binary pattern, mean over batches in data order), ``loss_history`` (per
    epoch), ``theta``, ``search_seconds`` (all sittings) and ``fingerprint``), and after each pattern
    ``loupe_<forward_model>_loss.png`` (:func:`~common.apps.igs.plot_loupe_loss`: the relaxed loss per epoch of every
    acceleration written so far, the binary pattern's loss marked). A rerun skips an acceleration whose file was made
    with the same fingerprint and refuses one made with other settings.

    Resume: every ``checkpoint_every`` epochs (and after the last) the acceleration's state is written atomically to
    ``loupe_<forward_model>_x<R>_state.pt`` (``torch.save`` of a dict: ``fingerprint``, ``acceleration``, ``epoch``
    (epochs done), ``theta`` (float32 CPU ``(W,)`` or ``(C, W)``), ``optimizer`` (Adam's ``state_dict``),
    ``generator`` (the local generator's ``get_state()``), ``loss_history`` and ``seconds`` (spent on it so far)). A
    rerun continues an acceleration from its state when made with the same fingerprint, giving the same ``theta`` as
    an uninterrupted run, and refuses one made with other settings. The state file is deleted once the pattern is
    written. With ``time_limit``, a run that has passed that many seconds after an epoch saves the state and returns
    without the patterns not yet written (the same command continues), so 100 epochs can span several sittings.

    Under ``torchrun`` (the process group joined, e.g. by :func:`common.utils.distributed.init_distributed`) the
    logits are a :class:`RelaxedLineMask` wrapped in ``DistributedDataParallel``: every rank draws the same batch order
    and ``u`` (the same seeded generator), takes its share of each batch of ``batch_size`` slices (every ``world``-th
    slice, the batch first padded by its own first slices to a multiple of ``world``, as ``DistributedSampler`` pads
    an epoch), and the gradients of the ranks' losses are averaged before the clip and the Adam step, so every rank
    holds the same ``theta``. An epoch keeps its number of steps and each step its ``batch_size`` slices; the pooled
    Dice of a step is pooled over a rank's share, so the result is close to, not equal to, one process's. The epoch
    loss is averaged over the ranks and the time limit is checked by all of them together (any rank past it stops
    every one). Rank 0 writes the states, patterns and figure; a rerun resumes from them with any number of ranks.

    Args:
        network: segmentation network pretrained on fully sampled images; ``(B, C, H, W)`` -> logits ``(B, K, H, W)``.
            It is put in eval mode and its parameters are frozen.
        data: slice dicts with ``image`` ``(C, H, W)`` (magnitude, before normalisation) and ``label`` ``(1, H, W)``
            (class indices); ``patient`` / ``phase`` / ``slice`` seed the phase maps of ``forward_model="phase"``.
        output_dir: where the patterns go.
        accelerations: factors to learn a pattern for, each on its own.
        epochs: passes over ``data`` per acceleration (100 as the authors).
        lr: Adam learning rate on ``theta``.
        batch_size: slices per step (32 as the authors; the last batch of an epoch may be smaller).
        forward_model: ``"magnitude"`` or ``"phase"`` (see :func:`~common.apps.igs.cache_line_spectra`).
        phase_seed_base, max_phase: seed base and peak (radians) of the phase maps.
        seed: seed of the local generator.
        per_channel: one pattern per input channel (``(C, W)``), each row renormalised on its own.
        pe_dim: -1 (lines index W) or -2 (lines index H).
        device: where the search runs; the k-space of ``data`` is cached there.
        amp: mixed precision of the network forward as :func:`~common.apps.igs.autocast_settings` (``True``:
            bfloat16 on the CPU and CUDA >= 8.0, float16 with a constant loss scale, undone on ``theta``'s gradient
            before clipping, on older CUDA devices; ``"bf16"`` / ``"fp16"`` to choose). The FFTs, the mask and the
            loss stay float32.
        normalize: applied to each undersampled image before the network (default per-slice z-score).
        loss: the :func:`~common.apps.igs.igs_loss` name minimised (default the batch-pooled soft Dice; ``"ce"`` for
            classification, ``"l1"`` / ``"ssim"`` / ``"ssim_l1"`` for reconstruction).
        checkpoint_every: save the resume state every this many epochs (and after the last epoch).
        time_limit: wall-clock seconds of this run (from :meth:`run`'s start) after which it stops at the end of the
            epoch in progress, state saved (None: no limit). At least one epoch runs per call; the limit may be passed
            by one epoch.
    """

    def __init__(
        self,
        network: nn.Module,
        data: Sequence[dict],
        output_dir: str | Path,
        accelerations: Sequence[float] = (16, 8, 4),
        epochs: int = 100,
        lr: float = 1e-2,
        batch_size: int = 32,
        forward_model: str = "magnitude",
        phase_seed_base: int = 0,
        max_phase: float = math.pi,
        seed: int = 0,
        per_channel: bool = False,
        pe_dim: int = -1,
        device: str | torch.device = "cpu",
        amp: bool | str = False,
        normalize: Normalize | None = zscore_slices,
        loss: str = LOSS,
        checkpoint_every: int = 1,
        time_limit: float | None = None,
    ) -> None:
        if not data:
            raise ValueError("LOUPE: expected at least one slice in data, found none")
        if forward_model not in FORWARD_MODELS:
            raise ValueError(f"forward_model: expected one of {FORWARD_MODELS}, found '{forward_model}'")
        if epochs < 1:
            raise ValueError(f"epochs: expected >= 1, found {epochs}")
        if batch_size < 1:
            raise ValueError(f"batch_size: expected >= 1, found {batch_size}")
        if not lr > 0:
            raise ValueError(f"lr: expected > 0, found {lr}")
        if not accelerations:
            raise ValueError("accelerations: expected at least one factor, found none")
        if checkpoint_every < 1:
            raise ValueError(f"checkpoint_every: expected >= 1, found {checkpoint_every}")
        if time_limit is not None and not time_limit >= 0:
            raise ValueError(f"time_limit: expected None or seconds >= 0, found {time_limit}")
        self.pe_dim = check_pe_dim(pe_dim)
        self.network = network
        self.data = data
        self.output_dir = Path(output_dir)
        self.channels, height, width = np.asarray(data[0]["image"]).shape
        self.width = width if pe_dim == -1 else height
        self.budgets = {float(a): num_lines(self.width, a) for a in accelerations}
        self.epochs = int(epochs)
        self.lr = float(lr)
        self.batch_size = int(batch_size)
        self.forward_model = forward_model
        self.phase_seed_base = int(phase_seed_base)
        self.max_phase = float(max_phase)
        self.seed = int(seed)
        self.per_channel = per_channel
        self.device = torch.device(device)
        self.amp = amp
        self.autocast_dtype, self.loss_scale = autocast_settings(self.device, amp)
        self.normalize = normalize
        self.loss_name = loss
        self.loss_fn = igs_loss(loss)
        self.checkpoint_every = int(checkpoint_every)
        self.time_limit = None if time_limit is None else float(time_limit)

    def pattern_path(self, acceleration: float) -> Path:
        """``<output_dir>/loupe_<forward_model>_x<acceleration>.npy``."""
        return self.output_dir / f"loupe_{self.forward_model}_x{acceleration:g}.npy"

    def state_path(self, acceleration: float) -> Path:
        """``<output_dir>/loupe_<forward_model>_x<acceleration>_state.pt``: the resume state of one acceleration."""
        return self.output_dir / f"loupe_{self.forward_model}_x{acceleration:g}_state.pt"

    def loss_figure_path(self) -> Path:
        """``<output_dir>/loupe_<forward_model>_loss.png``."""
        return self.output_dir / f"loupe_{self.forward_model}_loss.png"

    def fingerprint(self) -> dict[str, Any]:
        """What the patterns are stamped with: network weights, data, and every setting that changes the result
        (not ``device`` and ``amp``, which change it only by rounding)."""
        return search_fingerprint(
            self.network,
            self.data,
            method="loupe",
            loss=self.loss_name,
            **acquisition_settings(self.forward_model, self.phase_seed_base, self.max_phase, self.normalize),
            epochs=self.epochs,
            lr=self.lr,
            seed=self.seed,
            batch_size=self.batch_size,
            per_channel=self.per_channel,
            pe_dim=self.pe_dim,
        )

    def _written(self, acceleration: float, expected: dict[str, Any]) -> dict[str, Any] | None:
        """The sidecar of the pattern if it exists with the ``expected`` fingerprint, None if there is none; raise if
        it exists with another."""
        npy = self.pattern_path(acceleration)
        sidecar = npy.with_suffix(".json")
        if not (npy.is_file() or sidecar.is_file()):
            return None
        meta = json.loads(sidecar.read_text()) if sidecar.is_file() else {}
        check_fingerprint(meta.get("fingerprint"), expected, sidecar if sidecar.is_file() else npy)
        if not npy.is_file():
            raise ValueError(f"{npy}: expected the pattern beside {sidecar.name}, found none; delete the sidecar")
        return meta

    def _load_state(self, acceleration: float, expected: dict[str, Any]) -> dict[str, Any] | None:
        """The resume state of ``acceleration`` if its file exists (None if not); raise naming the file if it was made
        with another fingerprint or lacks an entry."""
        path = self.state_path(acceleration)
        if not path.is_file():
            return None
        state = torch.load(path, map_location="cpu", weights_only=True)
        check_fingerprint(state.get("fingerprint") if isinstance(state, dict) else None, expected, path)
        missing = [k for k in STATE_KEYS if k not in state]
        if missing:
            raise ValueError(
                f"{path}: expected a LOUPE state with {list(STATE_KEYS)}, found one without {missing}; delete it to "
                "learn this acceleration afresh"
            )
        if state["acceleration"] != acceleration:
            raise ValueError(
                f"{path}: expected the state of acceleration {acceleration:g}, found {state['acceleration']:g}; "
                "delete it to learn this acceleration afresh"
            )
        logger.info("LOUPE x%g: resuming from %s after epoch %d/%d", acceleration, path, state["epoch"], self.epochs)
        return state

    def _save_state(self, state: dict[str, Any]) -> None:
        if not is_main_process():
            return
        with atomic_path(self.state_path(state["acceleration"])) as tmp:
            torch.save(state, tmp)

    def _any_rank(self, flag: bool) -> bool:
        """Whether ``flag`` holds on any rank (every rank gets the same answer)."""
        return bool(all_reduce_sum(torch.tensor([float(flag)], device=self.device)) > 0)

    def _cache(self) -> tuple[torch.Tensor, torch.Tensor]:
        """All slices' line spectra complex64 ``(N, C, H, W)`` and labels ``(N, 1, H, W)`` on ``device``."""
        chunks = cache_line_spectra(
            self.data,
            self.pe_dim,
            max(self.batch_size, 64),
            self.device,
            forward_model=self.forward_model,
            phase_seed_base=self.phase_seed_base,
            max_phase=self.max_phase,
        )
        spectra = torch.cat([s for s, _ in chunks])
        labels = torch.cat([lab for _, lab in chunks])
        return spectra, labels

    def _loss(self, spectrum: torch.Tensor, label: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        image = network_input(spectrum, mask, self.pe_dim, self.normalize)
        return self.loss_fn(network_logits(self.network, image, self.autocast_dtype), label)

    def _optimise(
        self,
        acceleration: float,
        spectra: torch.Tensor,
        labels: torch.Tensor,
        fingerprint: dict[str, Any],
        state: dict[str, Any] | None,
        deadline: float | None,
    ) -> dict[str, Any]:
        """Train ``theta`` for one acceleration, from the start or from a resume ``state``, to the last epoch or to
        the end of the first epoch after ``time.perf_counter()`` passed ``deadline``; saves the state as the class
        docstring says and returns the last one (its ``epoch``: the epochs done)."""
        t0 = time.perf_counter()
        rows = self.channels if self.per_channel else 1
        theta0 = triangle_logits(self.width).repeat(rows, 1)
        theta0 = theta0 if self.per_channel else theta0[0]
        relaxed = RelaxedLineMask(theta0 if state is None else state["theta"], 1.0 / acceleration).to(self.device)
        theta = relaxed.theta
        sample = relaxed
        if is_distributed():  # the same theta on every rank (rank 0's, broadcast), gradients averaged over them
            sample = DistributedDataParallel(relaxed, device_ids=[self.device] if self.device.type == "cuda" else None)
        optimizer = torch.optim.Adam([theta], lr=self.lr, weight_decay=0.0)
        generator = torch.Generator().manual_seed(self.seed)
        if state is not None:
            optimizer.load_state_dict(state["optimizer"])
            generator.set_state(state["generator"])
        world = rank_and_world()[1]
        first = 0 if state is None else state["epoch"]
        history = [] if state is None else list(state["loss_history"])
        before = 0.0 if state is None else state["seconds"]  # spent in earlier sittings
        n = spectra.shape[0]
        bar = tqdm(
            range(first, self.epochs),
            initial=first,
            total=self.epochs,
            desc=f"LOUPE x{acceleration:g}",
            disable=None if is_main_process() else True,
        )
        for epoch in bar:
            order = torch.randperm(n, generator=generator)
            total = torch.zeros((), device=self.device)
            steps = 0
            for start in range(0, n, self.batch_size):
                batch = order[start : start + self.batch_size].tolist()
                batch += batch[: -len(batch) % world]  # padded to a multiple of the ranks (none in one process)
                index = torch.as_tensor(shard(batch), device=self.device)
                u = torch.rand(theta.shape, generator=generator).to(self.device)  # one draw per line per batch
                loss = self._loss(spectra[index], labels[index], sample(u))
                optimizer.zero_grad(set_to_none=True)
                (loss * self.loss_scale).backward()
                if self.loss_scale != 1.0:
                    theta.grad.div_(self.loss_scale)
                torch.nn.utils.clip_grad_norm_([theta], CLIP_NORM)
                optimizer.step()
                total += loss.detach()
                steps += 1
            summed = all_reduce_sum(torch.tensor([float(total), float(steps)], dtype=torch.float64, device=self.device))
            history.append(float(summed[0]) / float(summed[1]))  # one host sync per epoch: mean over steps and ranks
            bar.set_postfix(loss=f"{history[-1]:.4f}")
            if (epoch + 1) % max(1, self.epochs // 10) == 0 or epoch + 1 == self.epochs:
                logger.info(
                    "LOUPE x%g: epoch %d/%d, relaxed loss %.4f", acceleration, epoch + 1, self.epochs, history[-1]
                )
            stop = deadline is not None and self._any_rank(time.perf_counter() >= deadline)
            if stop or (epoch + 1) % self.checkpoint_every == 0 or epoch + 1 == self.epochs:
                state = {
                    "fingerprint": fingerprint,
                    "acceleration": acceleration,
                    "epoch": epoch + 1,
                    "theta": theta.detach().cpu().clone(),
                    "optimizer": optimizer.state_dict(),
                    "generator": generator.get_state(),
                    "loss_history": list(history),
                    "seconds": before + time.perf_counter() - t0,
                }
                self._save_state(state)
            if stop:
                break
        bar.close()
        return state

    def run(self) -> dict[float, Path]:
        """Learn (or keep) the pattern of every acceleration; returns ``{acceleration: path of the .npy pattern}`` of
        those written, all of them unless ``time_limit`` stopped the run (logged)."""
        deadline = None if self.time_limit is None else time.perf_counter() + self.time_limit
        self.network.eval().to(self.device)
        for p in self.network.parameters():
            p.requires_grad_(False)
        expected = self.fingerprint()
        written: dict[float, Path] = {}
        histories: dict[float, list[float]] = {}
        search_losses: dict[float, float] = {}
        todo: dict[float, dict[str, Any] | None] = {}  # acceleration -> its resume state (None: start afresh)
        for acc in self.budgets:
            meta = self._written(acc, expected)
            if meta is None:
                todo[acc] = self._load_state(acc, expected)
                continue
            logger.info("LOUPE x%g: %s made with the same settings exists, skipped", acc, self.pattern_path(acc))
            written[acc] = self.pattern_path(acc)
            histories[acc], search_losses[acc] = meta["loss_history"], meta["search_loss"]
        if not todo:
            return written
        t0 = time.perf_counter()
        spectra, labels = self._cache()
        logger.info(
            "LOUPE (%s): %d slices, width %d, budgets %s, cached in %.1f s",
            self.forward_model,
            spectra.shape[0],
            self.width,
            {a: self.budgets[a] for a in todo},
            time.perf_counter() - t0,
        )
        for acc, state in todo.items():
            state = self._optimise(acc, spectra, labels, expected, state, deadline)
            if state["epoch"] < self.epochs:
                logger.warning(
                    "LOUPE: time limit of %g s passed; x%g stopped after epoch %d/%d, state saved to %s; patterns not "
                    "written yet: %s. Run the same command again to continue.",
                    self.time_limit,
                    acc,
                    state["epoch"],
                    self.epochs,
                    self.state_path(acc),
                    ", ".join(f"x{a:g}" for a in self.budgets if a not in written),
                )
                break
            t0 = time.perf_counter()
            theta, history = state["theta"], state["loss_history"]
            mask, orders = top_lines(theta, self.budgets[acc])
            batches = RankBatches.deal(list(zip(spectra.split(self.batch_size), labels.split(self.batch_size))))
            search_loss = mask_loss(  # mean batch loss of the binary pattern over all slices in data order
                self.network, batches, mask.to(self.device), self.loss_fn, self.pe_dim, self.amp, self.normalize
            )
            seconds = state["seconds"] + time.perf_counter() - t0  # every sitting's epochs and this evaluation
            histories[acc], search_losses[acc] = history, search_loss
            written[acc] = self.pattern_path(acc)
            logger.info(
                "LOUPE x%g: %d lines, loss %.4f at the binary pattern, %.1f s -> %s",
                acc,
                self.budgets[acc],
                search_loss,
                seconds,
                written[acc],
            )
            if not is_main_process():
                continue
            save_line_pattern(
                self.pattern_path(acc),
                mask,
                order=None if self.per_channel else orders[0],
                orders=orders,
                method="LOUPE",
                acceleration=acc,
                axis=self.pe_dim,
                per_channel=self.per_channel,
                forward_model=self.forward_model,
                epochs=self.epochs,
                lr=self.lr,
                batch_size=self.batch_size,
                seed=self.seed,
                train_loss=history[-1],
                search_loss=search_loss,
                loss_history=history,
                theta=theta.tolist(),
                search_seconds=round(seconds, 3),
                fingerprint=expected,
            )
            self.state_path(acc).unlink()
            plot_loupe_loss(histories, search_losses, self.loss_figure_path())
        barrier()  # every rank waits for rank 0's files
        return {a: written[a] for a in self.budgets if a in written}
