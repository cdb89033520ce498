"""Tables and figures of the IGS search and of the pattern comparison (Dice, HD95, ASSD; mean +- sd over seeds)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch

from common.metrics.surface import EMPTY_MASK_CONVENTION
from common.utils.atomic_io import save_figure

__all__ = [
    "FORWARD_MODEL_NOTES",
    "plot_igs_search",
    "plot_channel_patterns",
    "mean_sd",
    "format_mean_sd",
    "markdown_table",
    "search_loss_table",
    "plot_dice_vs_acceleration",
    "plot_loupe_loss",
]


def plot_igs_search(
    order: Sequence[int],
    history: Sequence[Sequence[float]],
    width: int,
    budgets: Sequence[tuple[int, float]],
    path: str | Path,
    kept: Mapping[int, Sequence[int]] | None = None,
) -> Path:
    """Figure of the learned patterns (one row per acceleration), the order lines were added in, and the loss.

    ``kept``: the lines of the pattern kept at each budget (line count), when they are not the first ``budget``
    lines of ``order`` (a swap-refined or non-nested search)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(15, 4))
    axes = fig.subplots(1, 3, gridspec_kw={"width_ratios": [2, 2, 1.4]})
    rows = np.zeros((len(budgets), width))
    for r, (budget, _) in enumerate(budgets):
        rows[r, list(kept[budget] if kept is not None else order[:budget])] = 1
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


def plot_channel_patterns(
    patterns: Mapping[float, np.ndarray | torch.Tensor],
    path: str | Path,
    channel_names: Sequence[str] | None = None,
) -> Path:
    """Figure of per-channel line patterns (e.g. one per MR modality): one panel per acceleration, one image row per
    channel, sampled lines dark.

    Args:
        patterns: ``{acceleration: 0/1 mask (C, W)}``, the same ``C`` and ``W`` for every acceleration.
        path: where the PNG goes.
        channel_names: ``C`` row labels (None: ``channel 0`` ...).
    """
    from matplotlib.figure import Figure

    masks = {float(a): np.asarray(torch.as_tensor(m).detach().cpu(), dtype=np.float32) for a, m in patterns.items()}
    shapes = {m.shape for m in masks.values()}
    if not masks or len(shapes) != 1 or len(next(iter(shapes))) != 2:
        raise ValueError(f"patterns: expected one or more masks of one shape (C, W), found shapes {sorted(shapes)}")
    n_channels, width = next(iter(shapes))
    names = list(channel_names) if channel_names is not None else [f"channel {c}" for c in range(n_channels)]
    if len(names) != n_channels:
        raise ValueError(f"channel_names: expected {n_channels} names, found {len(names)}")
    accs = sorted(masks, reverse=True)
    fig = Figure(figsize=(10, 0.5 + 0.45 * n_channels * len(accs)))
    axes = fig.subplots(len(accs), 1, squeeze=False)[:, 0]
    for ax, acc in zip(axes, accs):
        mask = masks[acc]
        ax.imshow(mask, aspect="auto", cmap="gray_r", interpolation="nearest", vmin=0, vmax=1)
        ax.set_yticks(range(n_channels), [f"{n} ({int(r.sum())})" for n, r in zip(names, mask)])
        ax.set_title(f"x{acc:g}", fontsize="medium")
    axes[-1].set_xlabel(f"phase-encoding line (k-space centre at {width // 2})")
    fig.tight_layout()
    return save_figure(fig, path)


FORWARD_MODEL_NOTES = {
    "phase": (
        "the phase-aware model (on by default): each slice gets a smooth, seeded phase map before the FFT, as a real "
        "acquisition has, so line +f and line -f carry different information; training and test slices draw their "
        "phases from different seeds"
    ),
    "magnitude": (
        "the paper's setting: the magnitude image is the acquired image, so its k-space is conjugate-symmetric and "
        "line +f duplicates line -f"
    ),
}
"""What each forward model is, as the comparison's markdown says it."""


def mean_sd(values: Sequence[float]) -> tuple[float, float, int]:
    """Mean and sample standard deviation (``ddof=1``) of the non-NaN ``values``, and how many there are; the sd is
    NaN for fewer than two values, both NaN for none."""
    v = np.asarray(values, dtype=np.float64)
    v = v[~np.isnan(v)]
    if len(v) == 0:
        return float("nan"), float("nan"), 0
    return float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else float("nan"), len(v)


def format_mean_sd(values: Sequence[float], digits: int = 3) -> str:
    """``"0.512"`` for one value, ``"0.512 +- 0.013"`` (mean +- sample sd) for several, ``"nan"`` for none; NaN
    values are left out and counted (``"... (4 of 5)"``)."""
    mean, sd, n = mean_sd(values)
    if n == 0:
        return "nan"
    text = f"{mean:.{digits}f}" if n == 1 else f"{mean:.{digits}f} +- {sd:.{digits}f}"
    return text if n == len(values) else f"{text} ({n} of {len(values)})"


def _groups(rows: Sequence[dict]) -> dict[tuple, list[dict]]:
    """Rows by ``(forward_model, protocol, pattern, acceleration)``, in first-seen order (one row per seed)."""
    out: dict[tuple, list[dict]] = {}
    for r in rows:
        out.setdefault((r.get("forward_model", ""), r["protocol"], r["pattern"], r["acceleration"]), []).append(r)
    return out


def _seed_count(groups: Sequence[list[dict]]) -> str:
    counts = sorted({len(g) for g in groups})
    return "/".join(str(c) for c in counts)


def markdown_table(
    rows: Sequence[dict],
    accelerations: Sequence[int],
    tables: Sequence[tuple[str, str, int]],
    summary: str,
    sections: Sequence[str] = (),
) -> str:
    """Markdown of the pattern comparison rows (:class:`~common.apps.igs.PatternComparison`, one per forward model,
    protocol, pattern, acceleration and seed).

    A header (``summary``, the test set; what each forward model is), then one section per forward model: lines
    sampled and distinct ``|f|`` per pattern and acceleration, and per protocol one table per ``tables`` entry
    ``(row key, title, digits)`` (e.g. the task's Dice, HD95 and ASSD, or its AUC and accuracy) by pattern and
    acceleration with full sampling as a reference row; a ``mean_fg`` cell also gives ``mean`` (Dice incl.
    background) in brackets. A pattern with several rows (seeds) shows mean +- sample sd over them (``ddof=1``) and
    the column ``seeds`` says how many. Then the markdown ``sections`` (e.g. the paired intervals of
    :func:`~common.apps.igs.intervals_markdown`), the empty-mask counts (when the rows have them) and every row as it
    is in the CSV.
    """
    groups = _groups(rows)
    models = list(dict.fromkeys(k[0] for k in groups))
    protocols = list(dict.fromkeys(k[1] for k in groups))
    seeded = sorted({r["pattern"] for r in rows if r.get("seed") is not None})
    out = [summary]
    if seeded:
        counts = ", ".join(
            f"{p}: {_seed_count([g for k, g in groups.items() if k[1] == p and k[2] in seeded])}" for p in protocols
        )
        out.append(
            f"Seeded patterns ({', '.join(seeded)}): one draw per seed, shown as mean +- sample sd (ddof=1) over the "
            f"seeds; column `seeds` gives how many each row has ({counts}). The CSV keeps one row per seed."
        )
    out.append(
        "`distinct |f|`: how many distinct frequencies |f| = |line - W/2| a pattern covers (a line and its mirror "
        "count once)."
    )
    out.append("")
    out += [f'Forward model "{m}": {FORWARD_MODEL_NOTES.get(m, "")}.' for m in models if m] + [""]
    accs = " | ".join(f"x{a}" for a in accelerations)
    for model in models:
        if model:
            out += [f"## Forward model: {model}", ""]
        mine = {k[1:]: g for k, g in groups.items() if k[0] == model}
        patterns = list(dict.fromkeys(k[1] for k in mine if k[1] != "full"))
        out += ["**Lines sampled / distinct |f| covered**", "", f"| pattern | seeds | {accs} |"]
        out.append("|" + "---|" * (2 + len(accelerations)))
        for pattern in patterns:
            cells, n_seeds = [], set()
            for a in accelerations:
                by_seed = {r.get("seed"): r for k, g in mine.items() if k[1:] == (pattern, a) for r in g}
                n_seeds.add(len(by_seed))
                lines = _count([r["lines"] for r in by_seed.values()])
                cells.append(f"{lines} / {_count([r.get('distinct_f', float('nan')) for r in by_seed.values()])}")
            out.append(f"| {pattern} | {'/'.join(map(str, sorted(n_seeds)))} | " + " | ".join(cells) + " |")
        out.append("")
        for metric, title, digits in tables:
            if metric not in rows[0]:
                continue
            out += [f"**{title}**", "", f"| protocol | pattern | seeds | {accs} |"]
            out.append("|" + "---|" * (3 + len(accelerations)))
            for protocol in protocols:
                for pattern in patterns:
                    runs = [mine.get((protocol, pattern, a), []) for a in accelerations]
                    if not any(runs):
                        continue
                    cells = [_cell(g, metric, digits) for g in runs]
                    out.append(f"| {protocol} | {pattern} | {_seed_count(runs)} | " + " | ".join(cells) + " |")
                full = mine.get((protocol, "full", 1))
                if full:
                    cell = _cell(full, metric, digits)
                    out.append(
                        f"| {protocol} | full (x1) | {len(full)} | " + " | ".join(cell for _ in accelerations) + " |"
                    )
            out.append("")
    out += [section.rstrip("\n") + "\n" for section in sections]
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
    out += ["**All rows** (one per seed)", "", "| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    out += ["| " + " | ".join(_text(r[k]) for k in keys) + " |" for r in rows]
    return "\n".join(out) + "\n"


def search_loss_table(rows: Sequence[dict], accelerations: Sequence[int], loss: str | None) -> str:
    """Markdown of each pattern's search loss on the training slices (row key ``search_loss``) per forward model,
    pattern and acceleration (seeded patterns: mean +- sample sd over their seeds), so that a learned pattern can be
    checked against the baselines on the objective it was searched with; ``""`` when the rows have none."""
    if not rows or "search_loss" not in rows[0]:
        return ""
    protocol = rows[0]["protocol"]  # a pattern's mask, and so its search loss, is the same under every protocol
    groups = {k: g for k, g in _groups(rows).items() if k[1] == protocol}
    out = [
        f"**Search loss** (`{loss}` of the frozen network on the training slices under the training phases, as the "
        "searches minimise it; lower is better)",
        "",
        "| forward model | pattern | " + " | ".join(f"x{a}" for a in accelerations) + " |",
        "|" + "---|" * (2 + len(accelerations)),
    ]
    for model in dict.fromkeys(k[0] for k in groups):
        for pattern in dict.fromkeys(k[2] for k in groups if k[0] == model and k[2] != "full"):
            cells = [_cell(groups.get((model, protocol, pattern, a), []), "search_loss", 4) for a in accelerations]
            out.append(f"| {model} | {pattern} | " + " | ".join(cells) + " |")
    return "\n".join(out) + "\n"


def _cell(group: Sequence[dict], metric: str, digits: int) -> str:
    """One table cell: the metric over the group's rows (seeds); Dice also the mean incl. background in brackets."""
    if not group:
        return ""
    text = format_mean_sd([r[metric] for r in group], digits)
    if metric == "mean_fg" and "mean" in group[0]:
        text += f" ({format_mean_sd([r['mean'] for r in group], digits)})"
    return text


def _count(values: Sequence[float]) -> str:
    """A count over seeds: the number when every seed has the same, else mean +- sample sd to one decimal."""
    if not values:
        return ""
    return str(int(values[0])) if len(set(values)) == 1 else format_mean_sd(values, 1)


def _text(value: object) -> str:
    if value is None:
        return ""
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def plot_dice_vs_acceleration(
    rows: Sequence[dict],
    path: str | Path,
    metric: str = "mean_fg",
    label: str = "Dice (mean over the foreground classes)",
) -> Path:
    """A score against acceleration (row key ``metric``, axis ``label``: by default the mean foreground Dice), one
    line per pattern (mean over seeds, error bars one sample sd), one panel per forward model (rows) and protocol
    (columns); full sampling dashed (PNG)."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter

    groups = _groups(rows)
    models = list(dict.fromkeys(k[0] for k in groups))
    protocols = list(dict.fromkeys(k[1] for k in groups))
    fig = Figure(figsize=(5.5 * len(protocols), 4 * len(models)))
    axes = fig.subplots(len(models), len(protocols), squeeze=False)
    for row_axes, model in zip(axes, models):
        for ax, protocol in zip(row_axes, protocols):
            mine = {k[2:]: g for k, g in groups.items() if k[:2] == (model, protocol)}
            for pattern in dict.fromkeys(k[0] for k in mine if k[0] != "full"):
                accs = sorted(a for p, a in mine if p == pattern)
                stats = [mean_sd([r[metric] for r in mine[(pattern, a)]]) for a in accs]
                sd = [s if n > 1 else 0.0 for _, s, n in stats]
                ax.errorbar(accs, [m for m, _, _ in stats], yerr=sd, marker="o", capsize=3, label=pattern)
            if ("full", 1) in mine:
                full = mean_sd([r[metric] for r in mine[("full", 1)]])[0]
                ax.axhline(full, color="k", linestyle="--", label="full sampling")
            ax.set_xscale("log", base=2)
            ax.set_xticks(sorted({a for p, a in mine if p != "full"}))
            ax.get_xaxis().set_major_formatter(FuncFormatter(lambda x, _: f"x{x:g}"))
            ax.set_xlabel("acceleration")
            ax.set_ylabel(label)
            ax.set_title(f"{model + ' model, ' if model else ''}{protocol} network")
            ax.legend(fontsize="small")
    fig.tight_layout()
    return save_figure(fig, path)


def plot_loupe_loss(
    histories: Mapping[float, Sequence[float]], search_losses: Mapping[float, float], path: str | Path
) -> Path:
    """LOUPE's relaxed training loss per epoch, one line per acceleration, and the loss at the final binary pattern
    (``search_loss``) as a star at the last epoch (PNG).

    Args:
        histories: ``{acceleration: mean relaxed loss of every epoch}`` (at least one epoch each).
        search_losses: ``{acceleration: loss at the binary pattern}`` for some or all of the accelerations of
            ``histories``.
        path: where the PNG goes.
    """
    from matplotlib.figure import Figure

    if not histories or not all(len(h) for h in histories.values()):
        lengths = {float(a): len(h) for a, h in histories.items()}
        raise ValueError(f"histories: expected one or more accelerations with >= 1 epoch each, found {lengths}")
    extra = sorted(set(map(float, search_losses)) - set(map(float, histories)))
    if extra:
        raise ValueError(
            f"search_losses: expected accelerations of histories {sorted(map(float, histories))}, found also {extra}"
        )
    fig = Figure(figsize=(6, 4))
    ax = fig.subplots()
    for acc in sorted(histories, reverse=True):
        history = list(histories[acc])
        epochs = np.arange(1, len(history) + 1)
        (line,) = ax.plot(epochs, history, label=f"x{acc:g} relaxed")
        if acc in search_losses:
            ax.plot(epochs[-1], search_losses[acc], marker="*", markersize=12, color=line.get_color(), linestyle="none")
    if search_losses:
        ax.plot([], [], marker="*", color="k", linestyle="none", label="binary pattern")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss (training slices)")
    ax.set_title("LOUPE")
    ax.legend(fontsize="small")
    fig.tight_layout()
    return save_figure(fig, path)
