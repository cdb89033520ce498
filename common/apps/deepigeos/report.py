"""Tables and figure of the interactive evaluation: Dice and ASSD per method and round, clicks per round, and the
orderings DeepIGeoS should show."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from common.metrics.surface import EMPTY_MASK_CONVENTION
from common.utils.atomic_io import atomic_path, save_figure, write_csv_rows

__all__ = ["summarise_rounds", "orderings", "markdown_report", "write_reports", "plot_dice_vs_clicks"]

_MEASURES = ("clicks", "clicks_total", "dice", "assd_mm", "seconds")


def _mean_sd(values: Sequence[float]) -> tuple[float, float, int]:
    """Mean and population sd of the non-NaN values and their count (NaN, NaN, 0 for none)."""
    v = np.asarray(values, dtype=np.float64)
    v = v[~np.isnan(v)]
    return (float(v.mean()), float(v.std()), len(v)) if len(v) else (math.nan, math.nan, 0)


def summarise_rounds(rows: Sequence[Mapping[str, object]]) -> list[dict]:
    """One row per (method, round) of the per-case ``rows`` (keys ``case``, ``method``, ``round`` and
    ``clicks``, ``clicks_total``, ``dice``, ``assd_mm``, ``seconds``): ``cases``, then ``<measure>_mean`` and
    ``<measure>_sd`` (population sd over cases; ASSD over the cases where both masks are non-empty, their number in
    ``assd_cases``). Methods in order of first appearance, rounds ascending."""
    groups: dict[tuple[str, int], list[Mapping[str, object]]] = {}
    for r in rows:
        groups.setdefault((str(r["method"]), int(r["round"])), []).append(r)
    order = list(dict.fromkeys(str(r["method"]) for r in rows))
    out = []
    for method, rnd in sorted(groups, key=lambda k: (order.index(k[0]), k[1])):
        group = groups[(method, rnd)]
        row: dict[str, object] = {"method": method, "round": rnd, "cases": len(group)}
        for m in _MEASURES:
            mean, sd, n = _mean_sd([float(g[m]) for g in group])
            row[f"{m}_mean"], row[f"{m}_sd"] = mean, sd
            if m == "assd_mm":
                row["assd_cases"] = n
        out.append(row)
    return out


def _dice_by(summary: Sequence[Mapping[str, object]]) -> dict[tuple[str, int], float]:
    return {(str(r["method"]), int(r["round"])): float(r["dice_mean"]) for r in summary}


def orderings(
    summary: Sequence[Mapping[str, object]], methods: Sequence[str], start: str = "P-Net + CRF-Net(f)"
) -> list[tuple[str, bool | None]]:
    """The orderings DeepIGeoS should show, each ``(statement with the numbers, holds)``; ``holds`` is None where a
    method needed for it was not evaluated. Compared on the mean Dice over cases.

    1. P-Net + CRF-Net(f) >= P-Net.  2. After round 1, R-Net + CRF-Net(fu) > P-Net + CRF-Net(f).
    3. Dice does not fall from one round to the next, for each refinement method (round 0: ``start``, the automatic
    method the refinement started from).  4. R-Net on geodesic maps >= R-Net on Euclidean maps, round by round.
    """
    dice = _dice_by(summary)
    rounds = sorted({int(r["round"]) for r in summary if int(r["round"]) > 0})
    out: list[tuple[str, bool | None]] = []

    def have(*keys: tuple[str, int]) -> bool:
        return all(k in dice for k in keys)

    a, b = ("P-Net + CRF-Net(f)", 0), ("P-Net", 0)
    out.append(
        (f"P-Net + CRF-Net(f) >= P-Net: {dice[a]:.4f} vs {dice[b]:.4f}", dice[a] >= dice[b])
        if have(a, b)
        else ("P-Net + CRF-Net(f) >= P-Net: not evaluated", None)
    )
    a = ("R-Net + CRF-Net(fu)", 1)
    b = ("P-Net + CRF-Net(f)", 0)
    out.append(
        (f"after round 1, R-Net + CRF-Net(fu) > P-Net + CRF-Net(f): {dice[a]:.4f} vs {dice[b]:.4f}", dice[a] > dice[b])
        if have(a, b)
        else ("after round 1, R-Net + CRF-Net(fu) > P-Net + CRF-Net(f): not evaluated", None)
    )
    for method in methods:
        if not any(m == method for m, rnd in dice if rnd > 0):
            continue
        series = ([dice[(start, 0)]] if (start, 0) in dice else []) + [
            dice[(method, r)] for r in rounds if (method, r) in dice
        ]
        text = " -> ".join(f"{v:.4f}" for v in series)
        out.append((f"{method}: Dice does not fall from round to round: {text}", all(np.diff(series) >= 0)))
    geo, euc = "R-Net", "R-Net, Euclidean maps"
    pairs = [((geo, r), (euc, r)) for r in rounds if have((geo, r), (euc, r))]
    if pairs:
        text = ", ".join(f"round {g[1]}: {dice[g]:.4f} vs {dice[e]:.4f}" for g, e in pairs)
        out.append(
            (
                f"R-Net on geodesic maps >= on Euclidean maps, round by round: {text}",
                all(dice[g] >= dice[e] for g, e in pairs),
            )
        )
    else:
        out.append(("R-Net on geodesic maps >= on Euclidean maps: not evaluated (no Euclidean R-Net)", None))
    return out


def _fmt(mean: object, sd: object, digits: int) -> str:
    mean, sd = float(mean), float(sd)
    if math.isnan(mean):
        return "nan"
    return f"{mean:.{digits}f} +- {sd:.{digits}f}"


def markdown_report(
    summary: Sequence[Mapping[str, object]], methods: Sequence[str], settings: Mapping[str, object]
) -> str:
    """The markdown of :func:`write_reports`: settings, the table per method and round, the orderings."""
    cases = max(int(r["cases"]) for r in summary)
    lines = [
        "# DeepIGeoS interactive evaluation",
        "",
        f"{cases} test cases. Mean +- sd (population) over cases. Round 0 is the automatic segmentation; in round r "
        f"the simulated user adds clicks on the errors of the label of round r - 1 (the three orthogonal slices with "
        f"the most errors, the DeepIGeoS rule per error region, at most {settings.get('max_clicks')} per round) and "
        f"the method refines the {'initial' if settings.get('refine_from', 'initial') == 'initial' else 'previous'} "
        f"label with all clicks so far. The initial label is {settings.get('start')}.",
        "",
        "Settings: " + ", ".join(f"{k} {v}" for k, v in settings.items()),
        "",
        "| method | round | clicks in round | clicks so far | Dice | ASSD (mm) | ASSD cases | s per step |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for method in methods:
        for r in (s for s in summary if s["method"] == method):
            lines.append(
                f"| {method} | {r['round']} | {float(r['clicks_mean']):.1f} | {float(r['clicks_total_mean']):.1f} | "
                f"{_fmt(r['dice_mean'], r['dice_sd'], 4)} | {_fmt(r['assd_mm_mean'], r['assd_mm_sd'], 2)} | "
                f"{r['assd_cases']} | {float(r['seconds_mean']):.2f} |"
            )
    lines += ["", "Orderings (mean Dice):", ""]
    for text, holds in orderings(summary, methods, str(settings.get("start", "P-Net + CRF-Net(f)"))):
        lines.append(f"- {'holds' if holds else ('not evaluated' if holds is None else 'FAILS')}: {text}")
    lines += ["", f"ASSD: {EMPTY_MASK_CONVENTION}", ""]
    return "\n".join(lines)


def write_reports(
    output_dir: str | Path,
    summary: Sequence[Mapping[str, object]],
    rows: Sequence[Mapping[str, object]],
    methods: Sequence[str],
    settings: Mapping[str, object],
) -> None:
    """Write ``interactive_evaluation.csv`` (``summary``), ``interactive_evaluation_cases.csv`` (``rows``) and
    ``interactive_evaluation.md`` into ``output_dir``, each atomically."""
    out = Path(output_dir)
    write_csv_rows(out / "interactive_evaluation.csv", summary)
    write_csv_rows(out / "interactive_evaluation_cases.csv", rows)
    with atomic_path(out / "interactive_evaluation.md") as tmp:
        tmp.write_text(markdown_report(summary, methods, settings))


def plot_dice_vs_clicks(
    summary: Sequence[Mapping[str, object]], methods: Sequence[str], path: str | Path, start: str = "P-Net + CRF-Net(f)"
) -> Path:
    """Mean Dice against the mean number of clicks so far, one line per refinement method (a marker per round, from
    the ``start`` label at 0 clicks), the automatic methods as points at 0 clicks."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 5))
    ax = fig.subplots()
    begin = {str(r["method"]): float(r["dice_mean"]) for r in summary if int(r["round"]) == 0}
    for method in methods:
        rows = [r for r in summary if r["method"] == method]
        if rows and int(rows[0]["round"]) == 0 and len(rows) == 1:
            ax.scatter([0], [begin[method]], marker="s", zorder=3, label=method)
            continue
        x = [float(r["clicks_total_mean"]) for r in rows]
        y = [float(r["dice_mean"]) for r in rows]
        if start in begin:
            x, y = [0.0, *x], [begin[start], *y]
        ax.plot(x, y, marker="o", label=method)
    ax.set_xlabel("clicks so far (mean over cases)")
    ax.set_ylabel("Dice (mean over cases)")
    ax.set_title("Dice against simulated clicks")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    return save_figure(fig, path)
