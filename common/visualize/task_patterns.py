"""Figure of learned per-channel line patterns across tasks: which k-space lines each task's search chose in each
channel (MR modality), on one grid.

Command line (reads ``<dir>/<name>_<forward_model>_x<acc>.npy``, the files the IGS search writes)::

    python -m common.visualize.task_patterns --out patterns.png --accelerations 16 8 4 \\
        --channel_names flair t1 t1ce t2 \\
        --task "segmentation=bundles/igs_brats/models/segmentation_small:igs" \\
        --task "reconstruction L1=bundles/igs_brats/models/reconstruction:igs_l1"
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from common.utils.atomic_io import save_figure

__all__ = ["plot_task_patterns", "load_task_patterns"]


def plot_task_patterns(
    patterns: Mapping[str, Mapping[float, np.ndarray]],
    path: str | Path,
    channel_names: Sequence[str] | None = None,
) -> Path:
    """One panel per (acceleration, channel): panel rows are the tasks, columns the phase-encoding lines, sampled
    lines dark (the drawing of ``common.apps.igs.plot_channel_patterns``, regrouped so that tasks sit side by side).

    Args:
        patterns: ``{task: {acceleration: 0/1 mask (C, W)}}``; every task has the same accelerations and every mask
            the same ``(C, W)``.
        path: where the PNG goes.
        channel_names: ``C`` column titles (None: ``channel 0`` ...).

    Returns:
        ``path``. The figure has ``len(accelerations)`` rows and ``C`` columns of panels, each an image of shape
        ``(len(patterns), W)``; the y labels give each task and its number of lines.
    """
    from matplotlib.figure import Figure

    tasks = list(patterns)
    if not tasks:
        raise ValueError("patterns: expected at least one task, found none")
    accs = {t: sorted((float(a) for a in patterns[t]), reverse=True) for t in tasks}
    if any(accs[t] != accs[tasks[0]] for t in tasks) or not accs[tasks[0]]:
        raise ValueError(f"patterns: expected the same accelerations for every task, found {accs}")
    masks = {t: {float(a): np.asarray(m, dtype=np.float32) for a, m in patterns[t].items()} for t in tasks}
    shapes = {m.shape for by_acc in masks.values() for m in by_acc.values()}
    if len(shapes) != 1 or len(next(iter(shapes))) != 2:
        raise ValueError(f"patterns: expected masks of one shape (C, W), found shapes {sorted(shapes)}")
    n_channels, width = next(iter(shapes))
    names = list(channel_names) if channel_names is not None else [f"channel {c}" for c in range(n_channels)]
    if len(names) != n_channels:
        raise ValueError(f"channel_names: expected {n_channels} names, found {len(names)}")
    rows = accs[tasks[0]]
    fig = Figure(figsize=(3.2 * n_channels + 1.8, 0.6 + 0.3 * len(tasks) * len(rows) + 0.4 * len(rows)))
    axes = fig.subplots(len(rows), n_channels, squeeze=False, sharex=True)
    for r, acc in enumerate(rows):
        for c, name in enumerate(names):
            ax = axes[r, c]
            grid = np.stack([masks[t][acc][c] for t in tasks])
            ax.imshow(grid, aspect="auto", cmap="gray_r", interpolation="nearest", vmin=0, vmax=1)
            ax.axvline(width // 2, color="tab:red", linewidth=0.6, alpha=0.6)
            ax.set_yticks(range(len(tasks)), [f"{t} ({int(g.sum())})" for t, g in zip(tasks, grid)] if c == 0 else [])
            ax.set_title(f"{name}, x{acc:g}", fontsize="medium")
    for ax in axes[-1]:
        ax.set_xlabel(f"phase-encoding line (centre {width // 2})")
    fig.tight_layout()
    return save_figure(fig, path)


def load_task_patterns(
    sources: Mapping[str, tuple[str | Path, str]], accelerations: Sequence[float], forward_model: str = "phase"
) -> dict[str, dict[float, np.ndarray]]:
    """Read ``{task: (directory, pattern name)}`` into ``{task: {acceleration: mask (C, W)}}`` from the search's
    ``<directory>/<name>_<forward_model>_x<acc>.npy`` files; a missing file raises naming it."""
    out: dict[str, dict[float, np.ndarray]] = {}
    for task, (directory, name) in sources.items():
        out[task] = {}
        for acc in accelerations:
            file = Path(directory) / f"{name}_{forward_model}_x{acc:g}.npy"
            if not file.is_file():
                raise FileNotFoundError(f"{file}: expected the {task!r} pattern at x{acc:g}, found no such file")
            out[task][float(acc)] = np.load(file)
    return out


def _task_source(text: str) -> tuple[str, tuple[str, str]]:
    """``"label=directory:name"`` -> ``(label, (directory, name))``."""
    label, sep, rest = text.partition("=")
    directory, sep2, name = rest.rpartition(":")
    if not (sep and sep2 and label and directory and name):
        raise argparse.ArgumentTypeError(f"--task: expected 'label=directory:pattern name', found {text!r}")
    return label, (directory, name)


def main(argv: Sequence[str] | None = None) -> Path:
    """Command line: draw the tasks' patterns (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="PNG to write")
    parser.add_argument("--task", action="append", type=_task_source, required=True, help="label=directory:name")
    parser.add_argument("--accelerations", nargs="+", type=float, default=[8.0])
    parser.add_argument("--forward_model", default="phase")
    parser.add_argument("--channel_names", nargs="+", default=None)
    args = parser.parse_args(argv)
    patterns = load_task_patterns(dict(args.task), args.accelerations, args.forward_model)
    return plot_task_patterns(patterns, args.out, args.channel_names)


if __name__ == "__main__":
    main()
