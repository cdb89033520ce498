"""Compare k-space line patterns by a downstream task (segmentation: Dice, HD95, ASSD per volume; classification:
accuracy, ROC AUC; reconstruction: SSIM, PSNR): learned patterns against the baselines at equal budgets, under each
forward model, with a frozen network and fine-tuned per pattern; under ``torchrun`` the rows are dealt over the
ranks."""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from common.apps.igs.evaluation import (
    fine_tune,
    volume_keys,
)
from common.apps.igs.fingerprint import check_fingerprint, data_digest, weights_digest
from common.apps.igs.intervals import intervals_markdown, intervals_unavailable, paired_intervals, per_volume
from common.apps.igs.objective import (
    FORWARD_MODELS,
    cache_line_spectra,
    igs_loss,
    mask_loss,
)
from common.apps.igs.report import markdown_table, plot_dice_vs_acceleration, search_loss_table
from common.apps.igs.tasks import pattern_scores
from common.transforms.kspace.masks import (
    distinct_frequencies,
    line_mask,
    load_line_pattern,
    num_lines,
)
from common.utils.atomic_io import atomic_path, write_csv_rows
from common.utils.distributed import barrier, gather, is_main_process, rank_and_world, shard
from common.utils.fingerprint import as_fingerprint

__all__ = [
    "CENTER_FRACTIONS",
    "BASELINES",
    "SEEDED",
    "PATTERN_SOURCES",
    "learned_pattern_file",
    "STATE_FILE",
    "RANK_STATE_FILES",
    "PatternComparison",
]

logger = logging.getLogger(__name__)

STATE_FILE = "pattern_comparison_state.pt"
"""In ``output_dir``: every finished row so far, so that a stopped comparison resumes (:meth:`PatternComparison.run`).
Under ``torchrun`` rank 0 writes it and rank ``r`` > 0 writes ``pattern_comparison_state_rank<r>.pt``
(:data:`RANK_STATE_FILES`) beside it; a rerun reads them all, and rank 0 merges them into this file at the end."""

RANK_STATE_FILES = "pattern_comparison_state_rank*.pt"
"""The pattern of the other ranks' state files in ``output_dir`` (see :data:`STATE_FILE`)."""

Job = tuple[str, str, str, int, int | None]
"""One row: ``(forward model, protocol, pattern, acceleration, seed)``."""

# fastMRI's centre fractions for the equispaced and random baselines, by acceleration (methods.md).
CENTER_FRACTIONS = {4: 0.08, 8: 0.04, 16: 0.04}

BASELINES = ("center", "one_sided", "equispaced", "random")
"""Patterns built here at the line budget; any other name in ``patterns`` is a learned pattern read from a file."""

SEEDED = ("equispaced", "random")
"""Baselines drawn once per seed, reported as mean +- sample sd over the seeds."""

PATTERN_SOURCES = {"igs": ("igs_search.json", "igs_forward_model"), "loupe": ("loupe.json", "loupe_forward_model")}
"""Per learned pattern: the bundle config that writes it and the id of its forward-model setting (named, as a command,
when its file is missing)."""

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")


def learned_pattern_file(patterns_dir: str | Path, name: str, forward_model: str, acceleration: float) -> Path:
    """Where a learned pattern lives: ``<patterns_dir>/<name>_<forward_model>_x<acc>.npy`` (``acc`` as ``%g``: 16,
    not 16.0), its JSON sidecar beside it."""
    return Path(patterns_dir) / f"{name}_{forward_model}_x{acceleration:g}.npy"


def _mean_count(counts: Sequence[int]) -> int | float:
    """The mean of per-row counts: an ``int`` when every row has the same count (always for a ``(W,)`` pattern)."""
    return int(counts[0]) if len(set(counts)) == 1 else float(np.mean(counts))


class PatternComparison:
    """Learned patterns (IGS, LOUPE, ...) vs the baselines vs full sampling, per acceleration, forward model and
    protocol.

    Patterns: the baselines ``center`` (centred block), ``one_sided`` (one-sided partial-Fourier block from the
    centre, :class:`~common.transforms.OneSidedCenterLines`), ``equispaced`` and ``random`` (fastMRI-style, a centre
    block of ``center_fractions[acc]`` plus outer lines; drawn once per seed in ``seeds``), all at the budget
    ``width // acc``; and any other name is a learned pattern read from
    ``<patterns_dir>/<name>_<forward_model>_x<acc>.npy`` (:func:`learned_pattern_file`), refused unless its JSON
    sidecar's ``fingerprint`` names this network's weights and that forward model. Full sampling is always a
    reference row. Every row reports ``lines`` and ``distinct_f`` (:func:`~common.transforms.distinct_frequencies`:
    frequencies ``|f|`` covered, a line and its mirror counted once).

    Forward models (:func:`~common.apps.igs.cache_line_spectra`): ``"phase"`` gives each slice a smooth, seeded phase
    map before the FFT (training and test slices from different seed bases, so fine-tuning never sees a test phase);
    ``"magnitude"`` is the paper's setting (conjugate-symmetric k-space, line ``+f`` duplicates line ``-f``). Each
    data set's spectra are computed once per forward model, each mask once.

    Protocols: ``frozen``, the pretrained network segments test images undersampled with each pattern;
    ``fine_tuned``, a copy of it is first fine-tuned ``fine_tune_epochs`` epochs on training images undersampled with
    the pattern (AdamW ``fine_tune_lr``, ``fine_tune_loss``: 0.75 Dice + 0.25 CE by default, batch order from
    ``seed``) under the same forward model; the seeded baselines are fine-tuned for the seeds in ``fine_tune_seeds``
    only (one fine-tune per pattern, seed, acceleration and forward model: the expensive part).

    The ``task`` decides the scores (:func:`~common.apps.igs.pattern_scores`): ``"segmentation"`` as below;
    ``"classification"`` (two logits per slice, labels ``(1,)`` 0/1 from :func:`~common.apps.igs.task_slices`):
    ``accuracy`` and ``auc`` over the test slices (:class:`~common.apps.igs.ClassificationScores`);
    ``"reconstruction"`` (the image per channel, targets ``(C, H, W)`` in [0, 1]): ``ssim`` / ``psnr`` per channel
    and their means (:class:`~common.apps.igs.ReconstructionScores`). Fine-tuning minimises ``fine_tune_loss``.

    Segmentation: Dice is computed per volume (the slices of a frame pooled) and averaged over volumes, per class
    (``dice_<class>``) and over all classes incl. background (``mean``, the authors' figure). The scored structures
    are the ``regions`` (sets of classes, e.g. the BraTS tumour regions; ``dice_<region>``), by default one per
    foreground class (named after it, so ``dice_<class>``); their mean is ``mean_fg``. HD95 and ASSD are computed
    per volume (the slices of a frame stacked in slice order, in mm from each slice's ``spacing``) and scored
    structure, averaged over volumes per structure (``hd95_<name>``,
    ``assd_<name>``) and then over the structures (``hd95_mean_fg``, ``assd_mean_fg``); a structure empty in the
    prediction or the ground truth of a volume gives NaN, left out of the means, and is counted in
    ``surface_missed`` / ``surface_spurious`` (:data:`~common.metrics.EMPTY_MASK_CONVENTION`). ``lines`` and
    ``distinct_f`` count one pattern row (per channel for a per-channel pattern; a ``(W,)`` pattern is every
    channel's).

    Under ``torchrun`` (the process group joined, e.g. by :func:`common.utils.distributed.init_distributed`) the rows
    not yet finished (``(forward model, protocol, pattern, acceleration, seed)``, the fine-tunings being the costly
    ones) are dealt over the ranks (:func:`~common.utils.distributed.shard`); each rank computes the spectra of the
    forward models of its rows only and saves each row it finishes to its own state file (:data:`STATE_FILE`), and
    rank 0 gathers the rows and writes every table and figure: the files one process writes (a row's values are
    computed on one rank as one process computes them, the fine-tuning seeded by ``seed`` whatever ran before it).

    Writes to ``output_dir``: ``pattern_comparison.csv`` (one row per forward model, protocol, pattern, acceleration
    and seed; ``seed`` empty for unseeded patterns), ``pattern_comparison.md`` (one section per forward model; seeded
    patterns as mean +- sample sd over their seeds), ``dice_vs_acceleration.png`` (``auc_vs_acceleration.png``,
    ``ssim_vs_acceleration.png`` for the other tasks; a panel per forward model and protocol), and for segmentation
    the per-volume values ``pattern_comparison_{dice,dice_fg,hd95,assd}_raw.csv`` (one line per run and
    volume, named ``<forward_model>/<protocol>/<pattern>/x<acc>/<seed>/<patient>/<phase>`` with ``<seed>``
    ``seed<s>`` for a seeded pattern and ``-`` otherwise; a column per class (``dice``) or scored structure, and
    ``mean``, the NaN-aware mean over that line's columns: for ``dice_fg`` the volume's ``mean_fg``) and the paired
    intervals ``pattern_comparison_intervals.csv`` (:func:`~common.apps.igs.paired_intervals`: in each forward
    model, protocol and acceleration, each pattern's per-volume ``mean_fg`` against the best baseline's, paired by
    volume, 4,000 seeded bootstrap resamples; a section of the markdown with one generated finding per row; the
    classification and reconstruction scores are over slices, so the markdown says why they have none).

    Args:
        network: the pretrained network (weights loaded), ``(B, C, H, W)`` -> logits ``(B, K, H, W)`` (segmentation),
            ``(B, 2)`` (classification) or an image ``(B, C, H, W)`` (reconstruction).
        train_data / test_data: slice dicts (``image`` ``(C, H, W)`` magnitude, ``label`` ``(1, H, W)``,
            ``patient``, ``phase``, ``slice``; test slices also ``spacing`` ``(3,)`` mm, see
            :func:`~common.data.acdc.load_acdc_slices`; without ``spacing`` the distances are in pixels).
        output_dir: where the tables and the figure go.
        patterns_dir: folder of the learned patterns ``<name>_<forward_model>_x<acc>.npy`` + ``.json``.
        class_names: one per output class, background first.
        regions: ``{name: class indices}``, the structures scored instead of the foreground classes (regions may
            overlap: BraTS whole tumour, tumour core, enhancing tumour); ``None`` scores each foreground class.
            Segmentation only.
        task: ``"segmentation"``, ``"classification"`` or ``"reconstruction"`` (:data:`~common.apps.igs.TASKS`);
            ``class_names`` are then the two classes, or the image channels.
        fine_tune_loss: the :func:`~common.apps.igs.igs_loss` name fine-tuning minimises (``"dice_ce"``; ``"ce"``
            for classification; ``"l1"``, ``"ssim"`` or ``"ssim_l1"`` for reconstruction).
        accelerations: factors to compare.
        patterns: baselines (:data:`BASELINES`) and learned pattern names (letters, digits, ``_``, ``-``).
        protocols: any of ``frozen``, ``fine_tuned``.
        forward_models: any of ``"phase"``, ``"magnitude"`` (:data:`~common.apps.igs.FORWARD_MODELS`).
        seeds: the draws of the seeded baselines (equispaced, random) under the frozen protocol.
        fine_tune_seeds: the draws fine-tuned, a subset of ``seeds`` (default all of them).
        center_fractions: centre fraction per acceleration for equispaced and random.
        fine_tune_epochs, fine_tune_lr: the fine-tuning protocol.
        pe_dim: -1 (lines index W) or -2 (lines index H).
        batch_size: slices per batch; device: where it runs; amp: mixed precision of the network passes as
            :func:`~common.apps.igs.autocast_settings` (the bundle turns it on where CUDA is).
        seed: the fine-tuning batch order (the same for every pattern).
        train_phase_seed, test_phase_seed: phase seed bases of the training and test slices (``"phase"`` model);
            they must differ.
        max_phase: peak of the phase maps, radians.
        search_loss: the :func:`~common.apps.igs.igs_loss` name of the searches (``"dice_pooled"``): each pattern's
            loss through the frozen network on the training slices (under the training phases, as the search sees
            them), in groups of ``search_loss_batch`` slices, becomes the column ``search_loss`` and a table of the
            markdown; None: not computed.
        pattern_sources: per learned pattern, ``(config file, id of its forward-model setting)`` in the bundle,
            named in the error when a file is missing (added to :data:`PATTERN_SOURCES`).
    """

    def __init__(
        self,
        network: nn.Module,
        train_data: Sequence[dict],
        test_data: Sequence[dict],
        output_dir: str | Path,
        patterns_dir: str | Path,
        class_names: Sequence[str],
        accelerations: Sequence[int] = (4, 8, 16),
        patterns: Sequence[str] = ("igs", "loupe", "center", "one_sided", "equispaced", "random"),
        protocols: Sequence[str] = ("frozen", "fine_tuned"),
        forward_models: Sequence[str] = ("phase", "magnitude"),
        seeds: Sequence[int] = (0, 1, 2, 3, 4),
        fine_tune_seeds: Sequence[int] | None = None,
        center_fractions: Mapping[int, float] | None = None,
        fine_tune_epochs: int = 25,
        fine_tune_lr: float = 1e-4,
        pe_dim: int = -1,
        batch_size: int = 32,
        device: str | torch.device = "cpu",
        amp: bool | str = False,
        seed: int = 0,
        train_phase_seed: int = 0,
        test_phase_seed: int = 1,
        max_phase: float = math.pi,
        pattern_sources: Mapping[str, Sequence[str]] | None = None,
        regions: Mapping[str, Sequence[int]] | None = None,
        task: str = "segmentation",
        fine_tune_loss: str = "dice_ce",
        search_loss: str | None = None,
        search_loss_batch: int = 32,
    ) -> None:
        bad = [p for p in patterns if p not in BASELINES and (p == "full" or not _NAME.fullmatch(str(p)))]
        if bad or not patterns or len(set(patterns)) != len(patterns):
            raise ValueError(
                f"patterns: expected distinct baselines ({', '.join(BASELINES)}) or learned pattern names (letters, "
                f"digits, _ and -; full sampling is always a row), found {list(patterns)}"
            )
        if not protocols or set(protocols) - {"frozen", "fine_tuned"} or len(set(protocols)) != len(protocols):
            raise ValueError(f"protocols: expected frozen and/or fine_tuned, found {list(protocols)}")
        if (
            not forward_models
            or set(forward_models) - set(FORWARD_MODELS)
            or len(set(forward_models)) != len(forward_models)
        ):
            raise ValueError(
                f"forward_models: expected distinct entries of {FORWARD_MODELS}, found {list(forward_models)}"
            )
        if "fine_tuned" in protocols and not train_data:
            raise ValueError("PatternComparison: the fine_tuned protocol expects train_data, found none")
        seeds = [int(s) for s in seeds]
        fine_tune_seeds = list(seeds) if fine_tune_seeds is None else [int(s) for s in fine_tune_seeds]
        if not seeds or len(set(seeds)) != len(seeds):
            raise ValueError(f"seeds: expected at least one seed, all distinct, found {seeds}")
        if (
            not fine_tune_seeds
            or set(fine_tune_seeds) - set(seeds)
            or len(set(fine_tune_seeds)) != len(fine_tune_seeds)
        ):
            raise ValueError(f"fine_tune_seeds: expected distinct seeds among seeds {seeds}, found {fine_tune_seeds}")
        if train_phase_seed == test_phase_seed:
            raise ValueError(
                f"train_phase_seed, test_phase_seed: expected different phase seed bases (fine-tuning must not see "
                f"the test phases), found {train_phase_seed} for both"
            )
        self.network = network
        self.train_data, self.test_data = train_data, test_data
        self.output_dir, self.patterns_dir = Path(output_dir), Path(patterns_dir)
        self.class_names = list(class_names)
        self.task = task
        self.scorer = pattern_scores(task, self.class_names, regions)
        self.regions = getattr(self.scorer, "regions", None)
        self.fine_tune_loss = fine_tune_loss
        self.search_loss, self.search_loss_batch = search_loss, int(search_loss_batch)
        self.search_loss_fn = igs_loss(search_loss) if search_loss is not None else None
        self.accelerations = [int(a) for a in accelerations]
        self.patterns, self.protocols, self.forward_models = list(patterns), list(protocols), list(forward_models)
        self.seeds, self.fine_tune_seeds = seeds, fine_tune_seeds
        self.center_fractions = {int(k): float(v) for k, v in (center_fractions or CENTER_FRACTIONS).items()}
        missing = [a for a in self.accelerations if a not in self.center_fractions]
        if missing and set(SEEDED) & set(self.patterns):
            raise ValueError(f"center_fractions: expected an entry for accelerations {missing}, found none")
        self.fine_tune_epochs, self.fine_tune_lr = fine_tune_epochs, fine_tune_lr
        self.pe_dim, self.batch_size = pe_dim, batch_size
        self.device, self.amp, self.seed = torch.device(device), amp, seed
        self.train_phase_seed, self.test_phase_seed, self.max_phase = train_phase_seed, test_phase_seed, max_phase
        self.pattern_sources = {k: tuple(v) for k, v in {**PATTERN_SOURCES, **(pattern_sources or {})}.items()}
        bad_sources = {k: v for k, v in self.pattern_sources.items() if len(v) != 2}
        if bad_sources:
            raise ValueError(
                f"pattern_sources: expected (config file, forward-model setting id) per pattern, found {bad_sources}"
            )

    @property
    def scored(self) -> list[str]:
        """The names of the scored structures of segmentation (the regions; one per foreground class by default)."""
        return getattr(self.scorer, "scored", [])

    @property
    def learned(self) -> list[str]:
        """The learned pattern names among ``patterns``."""
        return [p for p in self.patterns if p not in BASELINES]

    def _learned_masks(self, width: int) -> dict[tuple[str, str, int], torch.Tensor]:
        """Every learned pattern, ``{(forward_model, name, acc): mask}``, after checking all files: every missing
        one is named at once (with the command that writes it), then each sidecar's fingerprint and line count."""
        files = {
            (fm, name, acc): learned_pattern_file(self.patterns_dir, name, fm, acc)
            for fm in self.forward_models
            for name in self.learned
            for acc in self.accelerations
        }
        absent = [(key, path) for key, path in files.items() if not path.is_file()]
        if absent:
            problems = [
                f"{path}: expected the learned '{n}' pattern ({fm} forward model, x{a}), found no such file; "
                + self._how_to_write(n, fm)
                for (fm, n, a), path in absent
            ]
            raise FileNotFoundError(
                f"patterns_dir {self.patterns_dir}: {len(absent)} learned pattern file(s) missing:\n  "
                + "\n  ".join(problems)
            )
        if not files:
            return {}
        expected = {"weights": weights_digest(self.network)}
        masks = {}
        for (fm, name, acc), path in files.items():
            sidecar = path.with_suffix(".json")
            try:
                meta = json.loads(sidecar.read_text()) if sidecar.is_file() else {}
            except ValueError as e:
                raise ValueError(
                    f"{sidecar}: expected the JSON sidecar of {path.name}, found unreadable content ({e})"
                ) from e
            check_fingerprint(
                meta.get("fingerprint"),
                {**expected, "forward_model": fm},
                source=sidecar,
                keys=["weights", "forward_model"],
            )
            mask = load_line_pattern(path, width=width)
            budget = num_lines(width, acc)
            counts = (mask > 0).sum(-1).reshape(-1).tolist()
            if any(c != budget for c in counts):
                raise ValueError(
                    f"{path}: expected {budget} lines (width {width} // x{acc}) per pattern row, found {counts}"
                )
            masks[(fm, name, acc)] = mask
        return masks

    def _how_to_write(self, name: str, forward_model: str) -> str:
        if name not in self.pattern_sources:
            return f"write it with the search that makes '{name}' patterns, or drop '{name}' from patterns"
        config, setting = self.pattern_sources[name]
        return (
            f"write it with `python -m monai.bundle run --config_file \"['<bundle>/configs/train.json',"
            f"'<bundle>/configs/{config}']\" --{setting} {forward_model}`, or drop '{name}' from patterns"
        )

    def _baseline_masks(self, width: int) -> dict[tuple[str, int, int | None], torch.Tensor]:
        """``{(pattern, acc, seed): mask}`` of every baseline (seed None for the unseeded ones) and of full sampling."""
        masks: dict[tuple[str, int, int | None], torch.Tensor] = {("full", 1, None): line_mask("full", width)}
        for pattern in (p for p in self.patterns if p in BASELINES):
            for acc in self.accelerations:
                for seed in self.seeds if pattern in SEEDED else [None]:
                    cf = self.center_fractions.get(acc) if pattern in SEEDED else None
                    masks[(pattern, acc, seed)] = line_mask(pattern, width, acc, cf, seed=seed)
        return masks

    def _runs(self) -> list[tuple[str, str, int, int | None]]:
        """``(protocol, pattern, acceleration, seed)`` per forward model: full sampling first, then by acceleration."""
        runs = []
        for protocol in self.protocols:
            runs.append((protocol, "full", 1, None))
            seeds = self.seeds if protocol == "frozen" else self.fine_tune_seeds
            runs += [
                (protocol, pattern, acc, seed)
                for acc in self.accelerations
                for pattern in self.patterns
                for seed in (seeds if pattern in SEEDED else [None])
            ]
        return runs

    def fingerprint(self) -> dict:
        """What every row depends on besides its pattern: the network's weights, the training and test slices, the
        task and the fine-tuning, phase and loss settings (as JSON values)."""
        return as_fingerprint(
            {
                "weights": weights_digest(self.network),
                "train": data_digest(self.train_data) if self.train_data else None,
                "test": data_digest(self.test_data),
                "task": self.task,
                "class_names": self.class_names,
                "regions": self.regions,
                "fine_tune_epochs": self.fine_tune_epochs,
                "fine_tune_lr": self.fine_tune_lr,
                "fine_tune_loss": self.fine_tune_loss,
                "seed": self.seed,
                "batch_size": self.batch_size,
                "amp": str(self.amp),
                "pe_dim": self.pe_dim,
                "phase": [self.train_phase_seed, self.test_phase_seed, self.max_phase],
                "search_loss": [self.search_loss, self.search_loss_batch],
            }
        )

    def _state_files(self) -> list[Path]:
        """The state files in ``output_dir``: :data:`STATE_FILE` and the other ranks' (:data:`RANK_STATE_FILES`)."""
        main = self.output_dir / STATE_FILE
        return ([main] if main.is_file() else []) + sorted(self.output_dir.glob(RANK_STATE_FILES))

    def _load_state(self, expected: dict) -> dict[str, dict]:
        """The finished rows of every state file (``{run key: {"row", "detail"}}``; empty if there is none); raise
        naming the file and each differing setting if one was made with other settings."""
        done: dict[str, dict] = {}
        for path in self._state_files():
            state = torch.load(path, map_location="cpu", weights_only=False)  # written by _save_state only
            check_fingerprint(state.get("fingerprint") if isinstance(state, dict) else None, expected, path)
            done.update(state["done"])
        if done:
            logger.info("pattern comparison: resuming with %d finished rows from %s", len(done), self.output_dir)
        return done

    def _save_state(self, expected: dict, done: dict[str, dict]) -> None:
        """``done`` to this rank's state file (:data:`STATE_FILE` on rank 0)."""
        rank = rank_and_world()[0]
        name = STATE_FILE if rank == 0 else RANK_STATE_FILES.replace("*", str(rank))
        self.output_dir.mkdir(parents=True, exist_ok=True)
        with atomic_path(self.output_dir / name) as tmp:
            torch.save({"fingerprint": expected, "done": done}, tmp)

    def _jobs(self) -> list[Job]:
        """Every row, forward model by forward model in :meth:`_runs`' order (the order of the tables)."""
        return [(fm, *run) for fm in self.forward_models for run in self._runs()]

    def run(self) -> list[dict]:
        """Evaluate every (forward model, protocol, pattern, acceleration, seed) and write the tables and figure;
        returns the rows (as in the CSV), on every rank.

        Each finished row is saved at once to the rank's state file (``output_dir/`` :data:`STATE_FILE` in one
        process), under a key that holds its pattern's values (a pattern file searched again is a new row), with
        :meth:`fingerprint`: a rerun with the same settings, on any number of ranks, takes the finished rows from the
        state files and runs only the others (a fine-tuning uses the same seed whatever ran before it, so the rows are
        those of one uninterrupted run), and a state made with other settings is refused naming them. Delete the
        files to start afresh."""
        t0 = time.perf_counter()
        self.network.to(self.device).eval()
        width = np.asarray(self.test_data[0]["image"]).shape[self.pe_dim]
        learned = self._learned_masks(width)  # every file checked before any spectrum is computed
        baseline = self._baseline_masks(width)
        volumes = volume_keys(self.test_data)
        expected = self.fingerprint()
        done = self._load_state(expected)
        jobs = self._jobs()
        masks = {
            (fm, pattern, acc, seed): (
                learned[(fm, pattern, acc)] if pattern in self.learned else baseline[(pattern, acc, seed)]
            )
            for fm, _, pattern, acc, seed in jobs
        }
        keys = {job: self._key(job, masks[(job[0], *job[2:])]) for job in jobs}
        mine = shard([job for job in jobs if keys[job] not in done])
        finished = {}
        for fm in self.forward_models:
            todo = [job for job in mine if job[0] == fm]
            if todo:
                finished |= self._run_forward_model(fm, todo, masks, keys, expected, done)
        done |= dict(gather(list(finished.items())))
        rows = [done[keys[job]]["row"] for job in jobs]
        details = [done[keys[job]]["detail"] for job in jobs]
        runs_done = [self._run_name(job) for job in jobs]
        if is_main_process():
            self._save_state(expected, done)  # every rank's rows in one file
            for path in self.output_dir.glob(RANK_STATE_FILES):
                path.unlink()
            headline = self.scorer.volume_headline(runs_done, details, self.test_data)
            self._write(rows, len(self.test_data), len(set(volumes)), headline)
            self.scorer.write_details(self.output_dir, runs_done, details, self.test_data)
        barrier()  # every rank returns once the files are written
        logger.info("pattern comparison done in %.1f s -> %s", time.perf_counter() - t0, self.output_dir)
        return rows

    @staticmethod
    def _run_name(job: Job) -> str:
        """``<forward_model>/<protocol>/<pattern>/x<acc>/<seed<s> or ->``: a row's name in the per-volume CSVs."""
        fm, protocol, pattern, acc, seed = job
        return f"{fm}/{protocol}/{pattern}/x{acc}/{'-' if seed is None else f'seed{seed}'}"

    def _key(self, job: Job, mask: torch.Tensor) -> str:
        """A row's key in the state: its name and a digest of its pattern's values."""
        digest = hashlib.sha256(mask.detach().float().cpu().numpy().tobytes()).hexdigest()[:16]
        return f"{self._run_name(job)}/{digest}"

    def _run_forward_model(
        self,
        fm: str,
        todo: list[Job],
        masks: dict[tuple, torch.Tensor],
        keys: dict[Job, str],
        expected: dict,
        done: dict[str, dict],
    ) -> dict[str, dict]:
        """This rank's rows ``todo`` of the forward model ``fm``, each saved to the rank's state as it finishes (and
        added to ``done``); returns ``{key: {"row", "detail"}}`` of them."""
        cache = {
            "device": self.device,
            "batch_size": self.batch_size,
            "pe_dim": self.pe_dim,
            "forward_model": fm,
            "max_phase": self.max_phase,
        }
        test = cache_line_spectra(self.test_data, phase_seed_base=self.test_phase_seed, **cache)
        train = []
        if any(protocol == "fine_tuned" and pattern != "full" for _, protocol, pattern, _, _ in todo):
            train = cache_line_spectra(self.train_data, phase_seed_base=self.train_phase_seed, **cache)
        mine = {
            (pattern, acc, seed): masks[(fm, pattern, acc, seed)].to(self.device) for _, _, pattern, acc, seed in todo
        }
        search_losses = self._search_losses(mine, {**cache, "batch_size": self.search_loss_batch})
        finished = {}
        for job in tqdm(todo, desc=f"patterns ({fm})", disable=None if is_main_process() else True):
            _, protocol, pattern, acc, seed = job
            mask = mine[(pattern, acc, seed)]
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
                    loss=self.fine_tune_loss,
                )
            pred, label = self.scorer.predict(net, test, mask, self.pe_dim, self.amp)
            metrics, detail = self.scorer.score(pred, label, self.test_data)
            if search_losses:
                metrics = {"search_loss": search_losses[(pattern, acc, seed)], **metrics}
            row = self._row(fm, protocol, pattern, acc, seed, mask, metrics)
            finished[keys[job]] = done[keys[job]] = {"row": row, "detail": detail}
            self._save_state(expected, done)
            shown = ", ".join(f"{k} {row[k]:.4f}" for k, _, _ in self.scorer.tables())
            seed_text = "" if seed is None else f" seed {seed}"
            logger.info("%s %s %s x%d%s: %s", fm, protocol, pattern, acc, seed_text, shown)
        return finished

    def _search_losses(self, masks: dict[tuple, torch.Tensor], cache: dict) -> dict[tuple, float]:
        """``{(pattern, acc, seed): the search loss of its mask on the training slices}`` (empty without
        ``search_loss``); ``cache`` as :func:`~common.apps.igs.cache_line_spectra` takes it."""
        if self.search_loss_fn is None:
            return {}
        train = cache_line_spectra(self.train_data, phase_seed_base=self.train_phase_seed, **cache)
        loss_fn, batch = self.search_loss_fn, self.search_loss_batch
        return {
            key: mask_loss(self.network, train, mask, loss_fn, self.pe_dim, self.amp, loss_batch=batch)
            for key, mask in masks.items()
        }

    def _row(
        self,
        forward_model: str,
        protocol: str,
        pattern: str,
        acc: int,
        seed: int | None,
        mask: torch.Tensor,
        metrics: dict,
    ) -> dict:
        rows = mask.reshape(-1, mask.shape[-1])
        return {
            "forward_model": forward_model,
            "protocol": protocol,
            "pattern": pattern,
            "acceleration": acc,
            "seed": seed,
            "lines": int((rows > 0).sum(-1).max()),  # per pattern row: every row of a learned pattern has the budget
            "distinct_f": _mean_count(distinct_frequencies(rows)),  # mean over the rows of a per-channel pattern
            **metrics,
        }

    def _write(self, rows: list[dict], n_slices: int, n_volumes: int, headline: dict[str, float] | None) -> None:
        """The CSV, the markdown (with the paired per-volume intervals of ``headline``, ``{per-volume line: value}``,
        where the task has one) and the figure."""
        self.output_dir.mkdir(parents=True, exist_ok=True)
        write_csv_rows(self.output_dir / "pattern_comparison.csv", rows)
        scorer = self.scorer
        metric, label = scorer.headline()
        intervals_csv = self.output_dir / "pattern_comparison_intervals.csv"
        intervals_csv.unlink(missing_ok=True)  # never one left from an earlier run
        if headline is None:
            section = intervals_unavailable(self.task)
        else:
            intervals = paired_intervals(per_volume(headline), BASELINES, metric)
            if intervals:
                write_csv_rows(intervals_csv, intervals)
            section = intervals_markdown(intervals, label, [p for p in BASELINES if p in self.patterns])
        with atomic_path(self.output_dir / "pattern_comparison.md") as tmp:
            tmp.write_text(
                markdown_table(
                    rows,
                    self.accelerations,
                    tables=scorer.tables(),
                    summary=scorer.summary(n_slices, n_volumes),
                    sections=[search_loss_table(rows, self.accelerations, self.search_loss), section],
                )
            )
        plot_dice_vs_acceleration(rows, self.output_dir / scorer.figure, metric=metric, label=label)
