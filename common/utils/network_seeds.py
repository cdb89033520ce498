"""A bundle's summary over network seeds: N networks, each trained with its own ``--seed`` and evaluated into its own
folder with the same command, combined into mean +- sample sd over the networks of every summary value (the spread a
rerun with another seed falls in)::

    python -m common.utils.network_seeds --runs eval/seed0 eval/seed1 eval/seed2 --table evaluation_summary.csv \\
        --ids score --values mean --out eval/network_seeds

Every run's table must hold the same rows (by ``ids``); a row is one summary line of a report (a score, a setting, a
method and round), a value one of its columns (a mean over the test cases)."""

from __future__ import annotations

import argparse
import csv
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from common.utils.atomic_io import atomic_path, write_csv_rows

__all__ = ["spread_over_runs", "spread_markdown", "network_seeds", "main"]


def _read(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: expected the summary table the bundle's evaluation writes, found none")
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def spread_over_runs(
    tables: Sequence[Sequence[dict]], ids: Sequence[str], values: Sequence[str], names: Sequence[str] | None = None
) -> list[dict]:
    """One row per row of the first table (by ``ids``, in its order): the ``ids``, ``networks`` and for each of
    ``values`` ``<value>_mean`` and ``<value>_sd`` (sample sd, ddof 1) over the tables, NaN left out (``<value>_n``
    networks where it is defined), and ``<value>_values`` (each network's value, ``;``-joined, 4 decimals).
    ``names`` (one per table, for errors) default to their positions. Raises ``ValueError`` when a table lacks a
    column, or holds other rows than the first."""
    names = [str(i) for i in range(len(tables))] if names is None else [str(n) for n in names]
    if len(tables) < 2 or len(names) != len(tables):
        raise ValueError(f"tables: expected two or more (one per network) and a name each, found {len(tables)}")
    keyed = []
    for name, table in zip(names, tables):
        missing = [c for c in (*ids, *values) if table and c not in table[0]]
        if not table or missing:
            raise ValueError(
                f"{name}: expected rows with the columns {[*ids, *values]}, found none or without {missing}"
            )
        keyed.append({tuple(str(r[i]) for i in ids): r for r in table})
    for name, rows in zip(names[1:], keyed[1:]):
        if set(rows) != set(keyed[0]):
            raise ValueError(
                f"{name}: expected the rows of {names[0]} ({sorted(keyed[0])}), found missing "
                f"{sorted(set(keyed[0]) - set(rows))}, extra {sorted(set(rows) - set(keyed[0]))}"
            )
    out = []
    for key in keyed[0]:
        row: dict[str, object] = dict(zip(ids, key))
        row["networks"] = len(tables)
        for value in values:
            v = np.array([float(rows[key][value]) for rows in keyed], dtype=np.float64)
            defined = v[~np.isnan(v)]
            row[f"{value}_mean"] = float(defined.mean()) if defined.size else math.nan
            row[f"{value}_sd"] = float(defined.std(ddof=1)) if defined.size > 1 else math.nan
            row[f"{value}_n"] = int(defined.size)
            row[f"{value}_values"] = ";".join(f"{x:.4f}" for x in v)
        out.append(row)
    return out


def spread_markdown(rows: Sequence[dict], ids: Sequence[str], values: Sequence[str], runs: Sequence[str]) -> str:
    """The :func:`spread_over_runs` rows as markdown: what was combined, then a table of ``mean +- sd (n)`` cells."""
    lines = [
        "# Summary over network seeds",
        "",
        f"{len(runs)} networks, one per evaluation folder ({', '.join(runs)}), each trained with its own seed and "
        "evaluated on the same test cases. Each cell: the mean over the networks of that network's value +- the "
        "sample sd (ddof 1) over the networks, and in brackets the networks where it is defined (a network's value is "
        "itself a mean over the test cases; its interval over cases is in that network's report).",
        "",
        "| " + " | ".join([*ids, *values]) + " |",
        "|" + "---|" * (len(ids) + len(values)),
    ]
    for r in rows:
        cells = [str(r[i]) for i in ids]
        for v in values:
            mean, sd, n = r[f"{v}_mean"], r[f"{v}_sd"], r[f"{v}_n"]
            cells.append("n/a" if n == 0 else f"{mean:.4g} +- {sd:.2g} ({n})" if n > 1 else f"{mean:.4g} (1)")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def network_seeds(
    runs: Sequence[str | Path], table: str, ids: Sequence[str], values: Sequence[str], out: str | Path
) -> list[dict]:
    """Combine ``<run>/<table>`` of every run (:func:`spread_over_runs`) into ``<out>/network_seeds.csv`` and
    ``<out>/network_seeds.md``; returns the rows."""
    runs = [Path(r) for r in runs]
    if len(set(runs)) != len(runs):
        raise ValueError(f"runs: expected distinct evaluation folders, found {[str(r) for r in runs]}")
    rows = spread_over_runs([_read(r / table) for r in runs], ids, values, [str(r / table) for r in runs])
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_csv_rows(out / "network_seeds.csv", rows)
    with atomic_path(out / "network_seeds.md") as tmp:
        Path(tmp).write_text(spread_markdown(rows, ids, values, [str(r) for r in runs]))
    return rows


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", nargs="+", required=True, help="evaluation folders, one per network seed")
    parser.add_argument("--table", required=True, help="the summary CSV inside each folder")
    parser.add_argument("--ids", nargs="+", required=True, help="columns naming a row")
    parser.add_argument("--values", nargs="+", required=True, help="columns to combine")
    parser.add_argument("--out", required=True, help="output folder")
    args = parser.parse_args(argv)
    try:
        network_seeds(args.runs, args.table, args.ids, args.values, args.out)
    except (FileNotFoundError, ValueError) as e:
        raise SystemExit(f"error: {e}") from None


if __name__ == "__main__":
    main()
