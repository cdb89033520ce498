"""configs/multi_gpu_evaluate.json of unet_lgg, iterative_fcn_spine and resunet_zoom_atlas, run as the model cards
type it (``torchrun``, two gloo processes on CPU): rank 0 writes the same files as one process (``run_bundle``) on the
same data and weights. Three test cases, dealt 2 + 1 over the ranks, so that rows concatenated rank by rank instead of
put back in the data's order would differ. The weights are seeded random initialisations (no training; the
predictions are neither empty nor full, so the scores differ between cases). Times (``seconds``) are measured, not
computed: they are left out of the comparison."""

from __future__ import annotations

import csv
import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from monai.bundle import ConfigParser

from common.synthetic.spine import write_synthetic_spine
from tests.bundles.conftest import SPECS, fresh_copy, run_bundle, torchrun_bundle


@dataclass(frozen=True)
class Evaluation:
    configs: tuple[str, ...]  # the evaluation's configs, as the card lists them
    weights: tuple[str, ...]  # the config ids of the weights files it loads
    args: tuple[str, ...]  # overrides that give three test cases (and small windows)
    written: str  # what rank 0 logs when it writes the report
    data: Callable[[Path], Path] | None = None  # three test cases (None: the bundle's test data, bundle_data)


EVALUATIONS = {
    # 6 patients in 2 folds: 3 test patients
    "unet_lgg": Evaluation(("train.json", "evaluate.json"), ("ckpt_path",), ("--num_folds", "2"), "dice_volume: mean"),
    # the CSI test folder with 3 cases
    "iterative_fcn_spine": Evaluation(
        ("inference.json", "evaluate.json"),
        ("ckpt_path",),
        (),
        "vertebra evaluation:",
        lambda out: write_synthetic_spine(out, n_training=0, n_testing=3, shape=(24, 24, 40), scale=0.6),
    ),
    # 10 subjects in 4 folds: 3 test subjects; two stages with different weights
    "resunet_zoom_atlas": Evaluation(
        ("train.json", "evaluate.json"),
        ("zoom_in_path", "zoom_out_path"),
        ("--num_folds", "4", "--eval_roi_size", "[16,16,16]"),
        "lesion evaluation written to",
    ),
}

TIME = re.compile(r"seconds|s / subject")
"""What names a measured time in the reports' columns, scores and markdown."""


def write_random_weights(root: Path, configs: list[Path], path: Path, seed: int) -> None:
    """The bundle's ``network_def`` (with the tiny overrides) initialised from ``seed``, its state dict saved at
    ``path``."""
    parser = ConfigParser()
    parser.read_config([str(c) for c in configs])
    parser["bundle_root"] = str(root)
    torch.manual_seed(seed)
    torch.save(parser.get_parsed_content("network_def").state_dict(), path)


def csv_without_times(path: Path) -> list[dict[str, str]]:
    """The rows of a CSV report without the columns and rows of measured times."""
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    return [
        {k: v for k, v in r.items() if not TIME.search(k)} for r in rows if not any(v == "seconds" for v in r.values())
    ]


def markdown_without_times(path: Path) -> list[str]:
    """The lines of a markdown report without what shows measured times: table columns headed by a time, table rows
    and other lines naming one."""
    out, drop, previous = [], set(), ""
    for line in path.read_text().splitlines():
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if not previous.startswith("|"):  # a table's header
                drop = {i for i, c in enumerate(cells) if TIME.search(c)}
            kept = [c for i, c in enumerate(cells) if i not in drop]
            if not any(TIME.search(c) for c in kept):
                out.append("|".join(kept))
        elif not TIME.search(line):
            out.append(line)
        previous = line
    return out


def assert_same_value(a: str, b: str, where: str) -> None:
    """Equal strings, or numbers equal to 1e-6 (NaN equal to NaN)."""
    if a == b:
        return
    try:
        x, y = float(a), float(b)
    except ValueError:
        raise AssertionError(f"{where}: one process wrote {a!r}, two processes {b!r}") from None
    assert (math.isnan(x) and math.isnan(y)) or x == pytest.approx(y, rel=1e-6, abs=1e-6), f"{where}: {a} != {b}"


@pytest.mark.slow
@pytest.mark.parametrize("bundle", list(EVALUATIONS))
def test_two_process_evaluation_writes_what_one_process_writes(bundle: str, bundle_data, tmp_path: Path) -> None:
    spec, evaluation = SPECS[bundle], EVALUATIONS[bundle]
    root = fresh_copy(bundle, tmp_path)
    data = evaluation.data(tmp_path / "data") if evaluation.data else bundle_data(bundle)
    tiny = tmp_path / "tiny.json"
    tiny.write_text(json.dumps(spec.tiny))
    configs = [root / "configs" / c for c in evaluation.configs]
    weights = []
    for seed, key in enumerate(evaluation.weights):
        path = tmp_path / f"weights_{seed}.pt"
        write_random_weights(root, [*configs, tiny], path, seed)
        weights += [f"--{key}", str(path)]
    args = ("--dataset_dir", str(data), *weights, *evaluation.args)

    (tmp_path / "one").mkdir()
    one, two = tmp_path / "one" / "eval", tmp_path / "eval"
    run_bundle(root, evaluation.configs, tmp_path / "one", *args, "--output_dir", str(one))
    rank_logs = torchrun_bundle(
        root, [*configs, root / "configs" / "multi_gpu_evaluate.json", tiny], tmp_path, *args, "--output_dir", str(two)
    )

    # rank 0 alone wrote the report
    assert evaluation.written in rank_logs[0] and evaluation.written not in rank_logs[1], rank_logs[1][-3000:]
    files = sorted(p.name for p in one.iterdir())
    assert sorted(p.name for p in two.iterdir()) == files and any(f.endswith(".csv") for f in files)

    cases: set[str] = set()
    for name in files:
        if name.endswith(".csv"):
            expected, found = csv_without_times(one / name), csv_without_times(two / name)
            assert len(found) == len(expected) > 0, name
            for i, (e, f) in enumerate(zip(expected, found)):
                assert list(f) == list(e), name
                for key in e:
                    assert_same_value(e[key], f[key], f"{name} row {i} {key}")
            cases |= {r[k] for r in expected for k in ("name", "case") if k in r}
        elif name.endswith(".md"):
            assert markdown_without_times(two / name) == markdown_without_times(one / name), name
        else:  # the figures: drawn from the same values in the same order
            assert (two / name).read_bytes() == (one / name).read_bytes(), name
    assert len(cases) == 3, cases  # three cases, dealt 2 + 1

    # the predictions are neither empty nor full (else equality would prove little)
    rows = csv_without_times(one / next(f for f in files if f in ("evaluation.csv", "lesion_scores.csv")))
    dice = [float(r.get("dice_volume", r.get("dice"))) for r in rows]
    assert any(0 < d < 1 for d in dice), dice
