"""IGS search variants on a trained igs_acdc checkpoint: search time and frozen per-volume Dice side by side.

For each variant the search runs to the lowest acceleration (patterns at every ``--accelerations`` from one run) on
the training slices, and the frozen network segments the validation fold of ``training/`` (never searched on: the
part to choose a variant with) and the test slices, undersampled with each pattern under the same forward model.
Printed per variant: the search seconds until each budget was reached (``search_seconds`` of the pattern sidecars:
k-space caching and fingerprinting included), the lines, and the Dice per volume (slices of a frame pooled,
``common.apps.igs.volume_dice``) averaged over volumes and the foreground classes (RV, myocardium, LV).

Variants: ``exact`` (one line per step over every slice from the centre line, the paper's search), ``subset`` (each
step's gradient from a fresh seeded ``--subset_fraction`` of the slices), ``multi`` (one line per step up to
``--exact_lines`` lines, then ``--lines_per_iteration`` per step), ``subset_multi`` (both), ``lookahead``
(``--lookahead`` candidates re-scored by their actual loss), ``one_sided`` (start from the highest acceleration's
one-sided centre block), ``one_sided_lookahead`` (both), ``guarded`` (the bundle's search: checked at each budget
against the centre, one-sided, equispaced and random patterns by the search loss, then refined by loss-lowering
swaps, nested), ``guarded_lookahead``, ``guarded_per_budget`` (swaps of any line) and ``guarded_subset_multi`` (the
cheaper growth, then the same guards and swaps).

Usage (a few minutes on 2 CPU cores with the demo's network at 128x128 and small settings):
    python benchmarks/bench_igs_variants.py --bundle_root bundles/igs_acdc --dataset_dir data/acdc \
        [--ckpt <bundle_root>/models/model.pt] [--forward_model phase] [--loss dice_pooled] \
        [--variants exact,subset,multi,subset_multi] [--subset_fraction 0.25] [--lines_per_iteration 4] \
        [--exact_lines 8] [--lookahead 8] [--accelerations 16,8,4] [--max_train_slices 0 (all)] \
        [--max_test_slices 0 (all; validation too)] [--batch 32 (slices per network pass)] \
        [--loss_batch 32 (slices per loss; divides --batch)] [--amp auto] [--out <temporary folder>]
The network is built from the bundle's train.json with the settings saved beside the checkpoint (``model.json``).
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from pathlib import Path

import fire
import numpy as np
import torch
from monai.bundle import ConfigParser

from common.apps.igs import GUARDS as ALL_GUARDS
from common.apps.igs import IterativeGradientSampling, cache_line_spectra, volume_dice
from common.data.acdc import acdc_slices
from common.networks import load_weights, read_model_info
from common.transforms import load_line_pattern


def _network(bundle_root: Path, ckpt: Path, device: torch.device) -> tuple[torch.nn.Module, dict]:
    """The bundle's ``network_def`` built with the checkpoint's training settings, weights loaded, on ``device``."""
    parser = ConfigParser()
    parser.read_config(str(bundle_root / "configs" / "train.json"))
    info = read_model_info(ckpt) or {}
    settings = info.get("settings", {})
    for key, value in settings.items():
        parser[key] = value
    parser["bundle_root"] = str(bundle_root)
    net = load_weights(parser.get_parsed_content("network_def"), ckpt, settings=settings or None)
    return net.to(device).eval(), {**{"image_size": parser["image_size"]}, **settings}


GUARDS = tuple(g for g in ALL_GUARDS if g != "loupe")
"""The guards of the ``guarded*`` variants (LOUPE's pattern is not in the benchmark's folder)."""


def _variants(
    names: str, subset_fraction: float, lines_per_iteration: int, exact_lines: int, lookahead: int
) -> dict[str, dict]:
    table = {
        "exact": {},
        "subset": {"subset_fraction": subset_fraction},
        "multi": {"lines_per_iteration": lines_per_iteration, "exact_lines": exact_lines},
        "subset_multi": {
            "subset_fraction": subset_fraction,
            "lines_per_iteration": lines_per_iteration,
            "exact_lines": exact_lines,
        },
        "lookahead": {"lookahead": lookahead},
        "one_sided": {"start": "one_sided"},
        "one_sided_lookahead": {"start": "one_sided", "lookahead": lookahead},
        "guarded": {"guards": GUARDS, "refine": "nested"},
        "guarded_lookahead": {"guards": GUARDS, "refine": "nested", "lookahead": lookahead},
        "guarded_per_budget": {"guards": GUARDS, "refine": "per_budget"},
        "guarded_subset_multi": {
            "guards": GUARDS,
            "refine": "nested",
            "subset_fraction": subset_fraction,
            "lines_per_iteration": lines_per_iteration,
            "exact_lines": exact_lines,
        },
    }
    chosen = [n.strip() for n in (names.split(",") if isinstance(names, str) else names)]
    unknown = [n for n in chosen if n not in table]
    if unknown:
        raise ValueError(f"--variants: expected names from {', '.join(table)}, found {unknown}")
    return {n: table[n] for n in chosen}


def _thin(items: list[dict], limit: int) -> list[dict]:
    """Every k-th slice, so that at most ``limit`` remain (0: all)."""
    if not limit or len(items) <= limit:
        return items
    step = int(np.ceil(len(items) / limit))
    return items[::step]


def main(
    bundle_root: str = "bundles/igs_acdc",
    dataset_dir: str = "data/acdc",
    ckpt: str | None = None,
    forward_model: str = "phase",
    loss: str = "dice_pooled",
    variants: str = "exact,subset,multi,subset_multi",
    subset_fraction: float = 0.25,
    lines_per_iteration: int = 4,
    exact_lines: int = 8,
    lookahead: int = 8,
    max_train_slices: int = 0,
    max_test_slices: int = 0,
    batch: int = 32,
    loss_batch: int = 32,
    amp: str = "auto",
    accelerations: str | tuple = "16,8,4",
    out: str | None = None,
) -> None:
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    use_amp = device.type == "cuda" if amp == "auto" else {"true": True, "false": False}.get(str(amp).lower(), amp)
    root = Path(bundle_root)
    ckpt_path = Path(ckpt) if ckpt else root / "models" / "model.pt"
    net, settings = _network(root, ckpt_path, device)
    size = int(settings["image_size"])
    train = _thin(acdc_slices(dataset_dir, "train", size), max_train_slices)
    accs = [int(a) for a in (accelerations.split(",") if isinstance(accelerations, str) else accelerations)]
    sets = {  # the validation fold of training/ (never searched on) and the test set
        "val": _thin(acdc_slices(dataset_dir, "val", size), max_test_slices),
        "test": _thin(acdc_slices(dataset_dir, "test", size), max_test_slices),
    }
    num_classes = int(settings.get("num_classes", 4))
    print(
        f"device {device}, torch {torch.__version__}, threads {torch.get_num_threads()}, amp {use_amp}, "
        f"forward model {forward_model}, loss {loss}, {len(train)} training / {len(sets['val'])} validation / "
        f"{len(sets['test'])} test slices {size}x{size}, "
        f"batch {batch}, checkpoint {ckpt_path}"
    )
    cached = {  # evaluation phases seeded apart from training ones, as the bundle's evaluate.json
        part: (
            cache_line_spectra(items, batch_size=batch, device=device, forward_model=forward_model, phase_seed_base=1),
            [f"{d.get('patient', '')}/{d.get('phase', '')}" for d in items],
        )
        for part, items in sets.items()
    }
    work = Path(out) if out else Path(tempfile.mkdtemp(prefix="bench_igs_variants_"))
    rows = []
    for name, options in _variants(variants, subset_fraction, lines_per_iteration, exact_lines, lookahead).items():
        folder = work / name
        shutil.rmtree(folder, ignore_errors=True)  # a fresh search, never a resumed one
        t0 = time.perf_counter()
        written = IterativeGradientSampling(
            net,
            train,
            folder,
            accelerations=accs,
            loss=loss,
            forward_model=forward_model,
            batch_size=batch,
            loss_batch=loss_batch,
            device=device,
            amp=use_amp,
            resume=False,
            **options,
        ).run()
        total = time.perf_counter() - t0
        row = {"variant": name, "total_s": total}
        for acc in accs:
            meta = json.loads(written[float(acc)].with_suffix(".json").read_text())
            mask = load_line_pattern(written[float(acc)], width=size).to(device)
            row[f"s_x{acc}"] = meta["search_seconds"]
            row[f"lines_x{acc}"] = meta["lines"]
            row[f"loss_x{acc}"] = meta["search_loss"]
            row[f"best_guard_x{acc}"] = min((meta.get("guard_losses") or {"-": float("nan")}).values())
            for part, (batches, volumes) in cached.items():
                dice = volume_dice(net, batches, volumes, mask, num_classes, amp=use_amp)
                row[f"{part}_x{acc}"] = float(np.nanmean(np.nanmean(dice[:, 1:], axis=0)))
        rows.append(row)
        print(
            f"  {name}: {total:.1f} s, "
            + ", ".join(
                f"x{a} val {row[f'val_x{a}']:.3f} test {row[f'test_x{a}']:.3f} ({row[f's_x{a}']:.1f} s, "
                f"search loss {row[f'loss_x{a}']:.4f}, best guard {row[f'best_guard_x{a}']:.4f}, "
                f"lines {row[f'lines_x{a}']})"
                for a in accs
            )
        )
    print(
        f"\n| variant | settings | {' | '.join(f's to x{a}' for a in accs)} | "
        f"{' | '.join(f'val Dice x{a}' for a in accs)} | {' | '.join(f'test Dice x{a}' for a in accs)} | "
        f"{' | '.join(f'search loss x{a}' for a in accs)} |"
    )
    print("|---|---|" + "---|" * (4 * len(accs)))
    options = _variants(variants, subset_fraction, lines_per_iteration, exact_lines, lookahead)
    for row in rows:
        text = ", ".join(f"{k}={v}" for k, v in options[row["variant"]].items()) or "every slice, 1 line per step"
        secs = " | ".join(f"{row[f's_x{a}']:.1f}" for a in accs)
        dice = " | ".join(f"{row[f'{part}_x{a}']:.3f}" for part in cached for a in accs)
        losses = " | ".join(f"{row[f'loss_x{a}']:.4f}" for a in accs)
        print(f"| {row['variant']} | {text} | {secs} | {dice} | {losses} |")
    print(
        f"\nDice: frozen network, per volume, mean over volumes and RV/myocardium/LV, on the validation fold of "
        f"training/ (choose with it) and on testing/ (report it); patterns in {work}"
    )


if __name__ == "__main__":
    fire.Fire(main)
