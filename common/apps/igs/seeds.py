"""The pattern comparison over network seeds: N networks, each trained with its own ``seed``, then searched and
compared into its own folder (one :class:`~common.apps.igs.PatternComparison` output each, on the same test volumes).
Writes the headline as mean +- sample sd over the networks and the paired per-volume intervals of every pattern
against the best baseline, each volume's value averaged over the networks first::

    python -m common.apps.igs.seeds --runs eval_seed0 eval_seed1 eval_seed2 --out eval_seeds
"""

from __future__ import annotations

import argparse
import csv
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from common.apps.igs.comparison import BASELINES
from common.apps.igs.intervals import (
    Values,
    intervals_markdown,
    intervals_unavailable,
    paired_intervals,
    per_volume,
)
from common.apps.igs.report import format_mean_sd, mean_sd
from common.utils.atomic_io import atomic_path, write_csv_rows
from common.utils.stats import N_RESAMPLES

__all__ = ["HEADLINES", "VOLUME_CSV", "network_seeds", "main"]

HEADLINES = {"mean_fg": "segmentation", "auc": "classification", "ssim": "reconstruction"}
"""The headline column of each task's ``pattern_comparison.csv``, and the task."""

VOLUME_CSV = "pattern_comparison_dice_fg_raw.csv"
"""The per-volume headline of a segmentation run: Dice per scored structure, ``mean`` the volume's ``mean_fg``."""

Key = tuple[str, str, int, str]  # (forward model, protocol, acceleration, pattern)


def _read_csv(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: expected the file a PatternComparison run writes (rerun the bundle's evaluate.json), found none"
        )
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _headline(path: Path, column: str | None = None) -> tuple[str, dict[Key, float]]:
    """The headline column (or ``column``) of one ``pattern_comparison.csv`` and its value per cell and pattern, a
    seeded pattern's rows averaged over its seeds."""
    rows = _read_csv(path)
    metric = column or next((m for m in HEADLINES if rows and m in rows[0]), None)
    if metric is None:
        found = list(rows[0]) if rows else []
        raise ValueError(f"{path}: expected rows with one of the columns {list(HEADLINES)}, found {found}")
    draws: dict[Key, list[float]] = {}
    for r in rows:
        key = (r["forward_model"], r["protocol"], int(r["acceleration"]), r["pattern"])
        draws.setdefault(key, []).append(float(r[metric]))
    return metric, {k: float(np.mean(v)) for k, v in draws.items()}


def _same_keys(runs: Sequence[Path], keys: Sequence[set], what: str) -> None:
    """Refuse runs whose ``keys`` differ from the first run's, naming what is missing and what is extra."""
    problems = [
        f"{run}: missing {sorted(keys[0] - k, key=str)}, extra {sorted(k - keys[0], key=str)}"
        for run, k in zip(runs[1:], keys[1:])
        if k != keys[0]
    ]
    if problems:
        raise ValueError(f"runs: expected the {what} of {runs[0]} in every run, found\n  " + "\n  ".join(problems))


def _volume_values(runs: Sequence[Path]) -> tuple[Values, list[str]]:
    """Each volume's headline (:data:`VOLUME_CSV`) averaged over the networks (plain mean: NaN where any network's
    is NaN), by cell and pattern, and the scored structures."""
    per_run, structures = [], None
    for run in runs:
        lines = _read_csv(run / VOLUME_CSV)
        per_run.append(per_volume({r["filename"]: float(r["mean"]) for r in lines}))
        structures = structures or [k for k in lines[0] if k not in ("filename", "mean")]
    volumes = [{v for ps in values.values() for vs in ps.values() for v in vs} for values in per_run]
    _same_keys(runs, volumes, "test volumes")
    flat = [{(*cell, p, v) for cell, ps in values.items() for p, vs in ps.items() for v in vs} for values in per_run]
    _same_keys(runs, flat, "cells, patterns and volumes")
    averaged: Values = {
        cell: {
            p: {v: float(np.mean([values[cell][p][v] for values in per_run])) for v in volumes}
            for p, volumes in patterns.items()
        }
        for cell, patterns in per_run[0].items()
    }
    return averaged, structures


def network_seeds(
    runs: Sequence[str | Path], output_dir: str | Path, n_resamples: int = N_RESAMPLES, seed: int = 0
) -> tuple[list[dict], list[dict]]:
    """Combine the comparison folders of several networks (one network seed each) and write the results.

    Per forward model, protocol, acceleration and pattern: the task's headline (``mean_fg``, ``auc`` or ``ssim`` of
    each run's ``pattern_comparison.csv``, a seeded baseline first averaged over its seeds within each network) as
    mean +- sample sd (``ddof=1``) over the networks. For segmentation, each volume's value (:data:`VOLUME_CSV`) is
    averaged over the networks (so the volume stays the unit), and
    :func:`~common.apps.igs.paired_intervals` compares every pattern with the best baseline of its cell over the
    volumes (``n_resamples`` resamples from ``seed``).

    Writes to ``output_dir``: ``network_seeds.csv`` (one row per cell and pattern: ``metric``, ``networks``,
    ``mean``, ``sd`` and the per-network ``values``, ``;``-separated in run order), ``network_seeds_intervals.csv``
    (the interval rows, :data:`~common.apps.igs.INTERVAL_COLUMNS`, where there are any; none for the tasks scored
    over slices, which the markdown says) and ``network_seeds.md``; where every run has the ``search_loss`` column,
    each pattern's search loss too (rows with ``metric`` ``search_loss``, a table per forward model)
    (a table per forward model, the intervals section and its findings).

    Args:
        runs: the comparison folders, one per network seed, on the same test volumes.
        output_dir: where the files go.
        n_resamples, seed: the bootstrap.

    Returns:
        the spread rows and the interval rows.
    """
    runs = [Path(r) for r in runs]
    if len(runs) < 2 or len(set(runs)) != len(runs):
        raise ValueError(f"runs: expected two or more distinct comparison folders, found {[str(r) for r in runs]}")
    headlines = [_headline(run / "pattern_comparison.csv") for run in runs]
    metrics = {m for m, _ in headlines}
    if len(metrics) != 1:
        raise ValueError(f"runs: expected one task's headline in every run, found {[m for m, _ in headlines]}")
    metric = metrics.pop()
    _same_keys(runs, [set(h) for _, h in headlines], "forward models, protocols, accelerations and patterns")
    losses = []  # each pattern's search loss (the same mask under every protocol: the frozen rows)
    if all("search_loss" in _read_csv(run / "pattern_comparison.csv")[0] for run in runs):
        losses = [
            (
                "search_loss",
                {
                    k: v
                    for k, v in _headline(run / "pattern_comparison.csv", "search_loss")[1].items()
                    if k[1] == "frozen" and k[3] != "full"
                },
            )
            for run in runs
        ]
    spread = []
    for name, table in ((metric, headlines), ("search_loss", losses)):
        for key in table[0][1] if table else []:
            values = [h[key] for _, h in table]
            mean, sd, n = mean_sd(values)
            fm, protocol, acc, pattern = key
            spread.append(
                {
                    "forward_model": fm,
                    "protocol": protocol,
                    "acceleration": acc,
                    "pattern": pattern,
                    "metric": name,
                    "networks": n,
                    "mean": mean,
                    "sd": sd,
                    "values": ";".join(f"{v:.4f}" for v in values),
                }
            )
    if HEADLINES[metric] != "segmentation":
        intervals, section = [], intervals_unavailable(HEADLINES[metric])
    else:
        averaged, structures = _volume_values(runs)
        intervals = paired_intervals(averaged, BASELINES, metric, n_resamples=n_resamples, seed=seed)
        patterns = {p for cell in averaged.values() for p in cell}
        label = f"Dice (mean over {', '.join(structures)})"
        baselines = [b for b in BASELINES if b in patterns]
        section = intervals_markdown(intervals, label, baselines, networks=len(runs), n_resamples=n_resamples)
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    write_csv_rows(output_dir / "network_seeds.csv", spread)
    intervals_csv = output_dir / "network_seeds_intervals.csv"
    intervals_csv.unlink(missing_ok=True)  # never one left from an earlier call
    if intervals:
        write_csv_rows(intervals_csv, intervals)
    with atomic_path(output_dir / "network_seeds.md") as tmp:
        tmp.write_text(_markdown(runs, metric, headlines, section, losses))
    return spread, intervals


def _markdown(
    runs: Sequence[Path],
    metric: str,
    headlines: Sequence[tuple[str, dict[Key, float]]],
    section: str,
    losses: Sequence[tuple[str, dict[Key, float]]] = (),
) -> str:
    """The header, one table per forward model (pattern rows by protocol, acceleration columns, full sampling as a
    reference row; then each pattern's search loss where the runs have it), then the intervals ``section``."""
    keys = list(headlines[0][1])
    accs = sorted({k[2] for k in keys if k[3] != "full"})
    out = [
        "# Pattern comparison over network seeds",
        "",
        f"{len(runs)} networks, one per comparison folder ({', '.join(str(r) for r in runs)}), each trained with its "
        f"own seed, then searched and compared on the same test volumes. `{metric}` as mean +- sample sd (ddof=1) "
        "over the networks; a seeded baseline is first averaged over its seeds within each network.",
        "",
    ]
    for model in dict.fromkeys(k[0] for k in keys):
        out += [f"## Forward model: {model}", "", "| protocol | pattern | " + " | ".join(f"x{a}" for a in accs) + " |"]
        out.append("|" + "---|" * (2 + len(accs)))
        for protocol in dict.fromkeys(k[1] for k in keys if k[0] == model):
            mine = [k for k in keys if k[:2] == (model, protocol)]
            for pattern in dict.fromkeys(k[3] for k in mine if k[3] != "full"):
                cells = [
                    (
                        format_mean_sd([h[(model, protocol, a, pattern)] for _, h in headlines])
                        if (model, protocol, a, pattern) in headlines[0][1]
                        else ""
                    )
                    for a in accs
                ]
                out.append(f"| {protocol} | {pattern} | " + " | ".join(cells) + " |")
            if (model, protocol, 1, "full") in mine:
                cell = format_mean_sd([h[(model, protocol, 1, "full")] for _, h in headlines])
                out.append(f"| {protocol} | full (x1) | " + " | ".join(cell for _ in accs) + " |")
        out.append("")
        if losses:
            out += [
                f"Search loss on the training slices (lower is better), forward model {model}:",
                "",
                "| pattern | " + " | ".join(f"x{a}" for a in accs) + " |",
                "|" + "---|" * (1 + len(accs)),
            ]
            for pattern in dict.fromkeys(k[3] for k in losses[0][1] if k[0] == model):
                cells = [
                    (
                        format_mean_sd([h[(model, "frozen", a, pattern)] for _, h in losses], 4)
                        if (model, "frozen", a, pattern) in losses[0][1]
                        else ""
                    )
                    for a in accs
                ]
                out.append(f"| {pattern} | " + " | ".join(cells) + " |")
            out.append("")
    return "\n".join(out) + "\n" + section


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m common.apps.igs.seeds", description=__doc__.split("::")[0].strip())
    parser.add_argument("--runs", nargs="+", required=True, help="comparison folders, one per network seed")
    parser.add_argument("--out", required=True, help="where network_seeds.md / .csv go")
    parser.add_argument("--resamples", type=int, default=N_RESAMPLES, help="bootstrap resamples")
    parser.add_argument("--seed", type=int, default=0, help="seed of the bootstrap resamples")
    args = parser.parse_args(argv)
    network_seeds(args.runs, args.out, n_resamples=args.resamples, seed=args.seed)
    print(Path(args.out) / "network_seeds.md")


if __name__ == "__main__":
    main()
