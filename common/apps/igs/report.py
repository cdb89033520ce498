"""Tables and figures of the IGS search and of the pattern comparison (Dice, HD95, ASSD)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from common.metrics.surface import EMPTY_MASK_CONVENTION
from common.utils.atomic_io import save_figure

__all__ = ["plot_igs_search", "markdown_table", "plot_dice_vs_acceleration"]


def plot_igs_search(
    order: Sequence[int],
    history: Sequence[Sequence[float]],
    width: int,
    budgets: Sequence[tuple[int, float]],
    path: str | Path,
) -> Path:
    """Figure of the learned patterns (one row per acceleration), the order lines were added in, and the loss."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(15, 4))
    axes = fig.subplots(1, 3, gridspec_kw={"width_ratios": [2, 2, 1.4]})
    rows = np.zeros((len(budgets), width))
    for r, (budget, _) in enumerate(budgets):
        rows[r, list(order[:budget])] = 1
    axes[0].imshow(rows, aspect="auto", cmap="gray_r", interpolation="nearest")
    axes[0].set_yticks(range(len(budgets)), [f"x{a:g} ({b} lines)" for b, a in budgets])
    axes[0].set_xlabel("phase-encoding line (k-space centre at %d)" % (width // 2))
    axes[0].set_title("IGS patterns")
    axes[1].scatter(list(order), range(len(order)), c=range(len(order)), cmap="viridis", s=12)
    axes[1].set_xlim(-0.5, width - 0.5)
    axes[1].set_xlabel("phase-encoding line")
    axes[1].set_ylabel("step at which the line was added")
    axes[1].set_title("order of selection")
    axes[2].plot([h[0] for h in history], [h[1] for h in history])
    axes[2].set_xlabel("lines sampled")
    axes[2].set_ylabel("search loss (training slices)")
    axes[2].set_title("loss along the search")
    fig.tight_layout()
    return save_figure(fig, path)


def markdown_table(
    rows: Sequence[dict], accelerations: Sequence[int], n_slices: int, n_volumes: int, unit: str = "mm"
) -> str:
    """Markdown: summaries by pattern and acceleration per protocol (mean Dice; mean HD95 and ASSD in ``unit`` when
    the rows have them), then the full per-class listing."""
    out = [f"Test set: {n_volumes} volumes ({n_slices} slices). Scores per volume, averaged over volumes.", ""]
    unit_text = "mm" if unit == "mm" else "pixels: 1 per pixel along H and W, 1 per slice"
    tables = [
        ("mean_fg", "Dice, mean over RV, myocardium, LV", "{:.3f}"),
        ("mean", "Dice, mean incl. background", "{:.3f}"),
        ("hd95_mean_fg", f"HD95 ({unit_text}), mean over RV, myocardium, LV", "{:.2f}"),
        ("assd_mean_fg", f"ASSD ({unit_text}), mean over RV, myocardium, LV", "{:.2f}"),
    ]
    for metric, title, fmt in tables:
        if metric not in rows[0]:
            continue
        out += [f"**{title}**", "", "| protocol | pattern | " + " | ".join(f"x{a}" for a in accelerations) + " |"]
        out.append("|" + "---|" * (2 + len(accelerations)))
        for protocol in dict.fromkeys(r["protocol"] for r in rows):
            full = next(r for r in rows if r["protocol"] == protocol and r["pattern"] == "full")
            for pattern in dict.fromkeys(r["pattern"] for r in rows if r["pattern"] != "full"):
                vals = {
                    r["acceleration"]: r[metric] for r in rows if r["protocol"] == protocol and r["pattern"] == pattern
                }
                out.append(
                    f"| {protocol} | {pattern} | " + " | ".join(fmt.format(vals[a]) for a in accelerations) + " |"
                )
            out.append(
                f"| {protocol} | full (x1) | " + " | ".join(fmt.format(full[metric]) for _ in accelerations) + " |"
            )
        out.append("")
    if "surface_missed" in rows[0]:
        missed = sum(r["surface_missed"] for r in rows)
        spurious = sum(r["surface_spurious"] for r in rows)
        out += [
            f"HD95 and ASSD per volume and foreground class (slices stacked in slice order). Over all rows, {missed} "
            f"(volume, class) pairs missed and {spurious} spurious (columns surface_missed, surface_spurious). "
            f"{EMPTY_MASK_CONVENTION}",
            "",
        ]
    keys = list(rows[0])
    out += ["**All rows**", "", "| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    out += [
        "| " + " | ".join(f"{r[k]:.4f}" if isinstance(r[k], float) else str(r[k]) for k in keys) + " |" for r in rows
    ]
    return "\n".join(out) + "\n"


def plot_dice_vs_acceleration(rows: Sequence[dict], path: str | Path) -> Path:
    """Mean foreground Dice against acceleration, one line per pattern, one panel per protocol (PNG)."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter

    protocols = list(dict.fromkeys(r["protocol"] for r in rows))
    fig = Figure(figsize=(5.5 * len(protocols), 4))
    axes = fig.subplots(1, len(protocols), squeeze=False)
    for ax, protocol in zip(axes[0], protocols):
        sub = [r for r in rows if r["protocol"] == protocol]
        for pattern in dict.fromkeys(r["pattern"] for r in sub if r["pattern"] != "full"):
            pts = sorted((r["acceleration"], r["mean_fg"]) for r in sub if r["pattern"] == pattern)
            ax.plot(*zip(*pts), marker="o", label=pattern)
        full = next(r["mean_fg"] for r in sub if r["pattern"] == "full")
        ax.axhline(full, color="k", linestyle="--", label="full sampling")
        ax.set_xscale("log", base=2)
        ax.set_xticks(sorted({r["acceleration"] for r in sub if r["pattern"] != "full"}))
        ax.get_xaxis().set_major_formatter(FuncFormatter(lambda x, _: f"x{x:g}"))
        ax.set_xlabel("acceleration")
        ax.set_ylabel("Dice (mean over RV, myocardium, LV)")
        ax.set_title(f"{protocol} network")
        ax.legend()
    fig.tight_layout()
    return save_figure(fig, path)
