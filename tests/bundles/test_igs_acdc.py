"""igs_acdc end to end through `python -m monai.bundle`: train, IGS search, pattern comparison, inference."""

from __future__ import annotations

import csv
import json
import math
import re
import shutil
import subprocess
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.bundle import ConfigWorkflow
from monai.bundle import run as bundle_run

from common.apps.igs.comparison import RANK_STATE_FILES, STATE_FILE
from common.transforms import save_line_pattern
from tests.bundles.conftest import REPO, SPECS, bundle_command, run_bundle, torchrun_bundle

BUNDLE = "igs_acdc"
SIZE = 32  # conftest.SPECS tiny image_size


@pytest.fixture(scope="module")
def searched(trained_bundle):
    """The tiny trained bundle with LOUPE and then IGS patterns under both forward models (what evaluate.json reads;
    LOUPE first, as scripts/demo.sh runs them, so that its pattern is one of the search's guards)."""
    tb = trained_bundle(BUNDLE)
    for fm in ("phase", "magnitude"):
        run_bundle(
            tb.root, ["train.json", "loupe.json"], tb.tmp, "--dataset_dir", str(tb.data), "--loupe_forward_model", fm
        )
        run_bundle(
            tb.root, ["train.json", "igs_search.json"], tb.tmp, "--dataset_dir", str(tb.data), "--igs_forward_model", fm
        )
    return tb


def test_training_wrote_checkpoints_and_per_class_dice(trained_bundle):
    tb = trained_bundle(BUNDLE)
    assert (tb.root / "models" / "model.pt").is_file() and (tb.root / "models" / "checkpoint_last.pt").is_file()
    for name in ("val_dice_rv", "val_dice_myocardium", "val_dice_lv", "val_mean_dice"):
        assert name in tb.log


def test_igs_search_writes_patterns_at_exact_budgets(searched):
    models = searched.root / "models"
    for fm in ("phase", "magnitude"):
        previous = set()
        for acc in (16, 8, 4):
            mask = np.load(models / f"igs_{fm}_x{acc}.npy")
            meta = json.loads((models / f"igs_{fm}_x{acc}.json").read_text())
            assert mask.shape == (SIZE,) and int(mask.sum()) == SIZE // acc == meta["num_lines"]
            assert meta["width"] == SIZE and meta["acceleration"] == acc and sorted(meta["order"]) == meta["lines"]
            assert meta["fingerprint"]["forward_model"] == fm and meta["fingerprint"]["refine"]["mode"] == "nested"
            # never beaten on its own objective by a baseline at its budget (the bundle's guards)
            assert {"center", "one_sided", "random_seed0", "equispaced_seed4", "loupe"} <= set(meta["guard_losses"])
            assert meta["search_loss"] <= min(meta["guard_losses"].values()) + 1e-6
            assert meta["nested"] == (previous <= set(meta["lines"]))
            previous = set(meta["lines"])
        assert (models / f"igs_{fm}_search.png").stat().st_size > 1000


@pytest.mark.slow
def test_loupe_writes_patterns_at_exact_budgets_and_skips_on_rerun(trained_bundle):
    tb = trained_bundle(BUNDLE)
    out = tb.tmp / "loupe"  # not models/: the evaluation's own LOUPE run is not mixed with this one
    args = ["--dataset_dir", str(tb.data), "--loupe_epochs", "2", "--loupe_forward_model", "phase"]
    run_bundle(tb.root, ["train.json", "loupe.json"], tb.tmp, *args, "--loupe#output_dir", str(out))
    for acc in (4, 8, 16):
        mask = np.load(out / f"loupe_phase_x{acc}.npy")
        meta = json.loads((out / f"loupe_phase_x{acc}.json").read_text())
        assert mask.shape == (SIZE,) and int(mask.sum()) == SIZE // acc == meta["num_lines"]
        assert meta["method"] == "LOUPE" and meta["epochs"] == 2 and meta["fingerprint"]["forward_model"] == "phase"
    r = run_bundle(tb.root, ["train.json", "loupe.json"], tb.tmp, *args, "--loupe#output_dir", str(out))
    assert (r.stdout + r.stderr).count("made with the same settings exists, skipped") == 3


def test_evaluation_table_covers_every_pattern_and_protocol(searched):
    """Every forward model, protocol, pattern and acceleration, the seeded baselines once per seed (fewer seeds
    fine-tuned, as a demo may set them); the learned patterns (IGS, LOUPE) are read for each forward model; each
    pattern's search loss (computed by the comparison, apart from the search) is never below the IGS pattern's."""
    args = ["--dataset_dir", str(searched.data), "--comparison_seeds", "[0, 1, 2]", "--fine_tune_seeds", "[1]"]
    args += ["--forward_models", "['phase', 'magnitude']"]  # both, as the card's script runs it
    run_bundle(searched.root, ["train.json", "evaluate.json"], searched.tmp, *args)
    out = searched.root / "eval"
    rows = list(csv.DictReader(open(out / "pattern_comparison.csv")))
    assert list(rows[0])[:7] == ["forward_model", "protocol", "pattern", "acceleration", "seed", "lines", "distinct_f"]
    seeds = {"frozen": ["0", "1", "2"], "fine_tuned": ["1"]}
    expected = set()
    for fm in ("phase", "magnitude"):
        for protocol in ("frozen", "fine_tuned"):
            expected.add((fm, protocol, "full", "1", ""))
            for acc in ("4", "8", "16"):
                expected |= {(fm, protocol, p, acc, "") for p in ("igs", "loupe", "center", "one_sided")}
                expected |= {(fm, protocol, p, acc, s) for p in ("equispaced", "random") for s in seeds[protocol]}
    combos = [(r["forward_model"], r["protocol"], r["pattern"], r["acceleration"], r["seed"]) for r in rows]
    assert set(combos) == expected and len(combos) == len(expected)
    for r in rows:
        assert int(r["lines"]) == SIZE // int(r["acceleration"])
        assert 1 <= int(r["distinct_f"]) <= int(r["lines"])
        if r["pattern"] == "one_sided":
            assert int(r["distinct_f"]) == int(r["lines"])  # each |f| once
        for k in ("dice_background", "dice_rv", "dice_myocardium", "dice_lv", "mean_fg", "mean"):
            assert 0.0 <= float(r[k]) <= 1.0
        for k in ("hd95_rv", "hd95_myocardium", "hd95_lv", "hd95_mean_fg", "assd_rv", "assd_lv", "assd_mean_fg"):
            assert math.isnan(float(r[k])) or float(r[k]) >= 0.0  # mm; NaN where every volume missed the class
        assert int(r["surface_missed"]) >= 0 and int(r["surface_spurious"]) >= 0
    for fm in ("phase", "magnitude"):
        for acc in ("4", "8", "16"):
            cell = [r for r in rows if (r["forward_model"], r["protocol"], r["acceleration"]) == (fm, "frozen", acc)]
            loss = {(r["pattern"], r["seed"]): float(r["search_loss"]) for r in cell}
            assert loss[("igs", "")] <= min(loss.values()) + 1e-6, (fm, acc, loss)
    intervals = list(csv.DictReader(open(out / "pattern_comparison_intervals.csv")))
    assert {(r["forward_model"], r["protocol"], r["acceleration"]) for r in intervals} == {
        (fm, protocol, acc) for fm in ("phase", "magnitude") for protocol in seeds for acc in ("4", "8", "16")
    }
    md = (out / "pattern_comparison.md").read_text()
    assert "## Forward model: phase" in md and "## Forward model: magnitude" in md
    assert "**Search loss** (`dice_pooled`" in md and "## Paired differences against the best baseline" in md
    assert "| frozen | igs | 1 |" in md and "| frozen | loupe | 1 |" in md and "| frozen | one_sided | 1 |" in md
    assert "| frozen | random | 3 |" in md and "| fine_tuned | random | 1 |" in md and " +- " in md
    assert "**HD95 (mm), mean over rv, myocardium, lv**" in md and "**Lines sampled / distinct |f| covered**" in md
    for metric in ("dice", "hd95", "assd"):
        assert (out / f"pattern_comparison_{metric}_raw.csv").is_file()
    assert (out / "dice_vs_acceleration.png").stat().st_size > 1000


@pytest.mark.parametrize("pattern", ["learned", "equispaced"])
def test_inference_writes_nifti_with_input_geometry(searched, pattern):
    out = searched.tmp / f"infer_{pattern}"
    run_bundle(
        searched.root,
        ["inference.json"],
        searched.tmp,
        "--dataset_dir",
        str(searched.data),
        "--output_dir",
        str(out),
        "--pattern",
        pattern,
        "--acceleration",
        "8",
    )
    inputs = sorted(searched.data.glob("testing/*/*_frame[0-9][0-9].nii.gz"))
    assert len(inputs) == 4
    for src in inputs:
        pred = nib.load(out / src.name.replace(".nii.gz", "_seg.nii.gz"))
        img = nib.load(src)
        assert pred.shape == img.shape
        np.testing.assert_allclose(pred.affine, img.affine, atol=1e-5)
        assert set(np.unique(np.asarray(pred.dataobj))) <= {0, 1, 2, 3}


def test_missing_dataset_dir_explains_how_to_generate(tmp_path):
    root = shutil.copytree(
        REPO / "bundles" / BUNDLE, tmp_path / BUNDLE, ignore=shutil.ignore_patterns("models", "eval")
    )
    cmd = bundle_command(
        root, [root / "configs" / "train.json"], "--dataset_dir", str(tmp_path / "nowhere"), run_id="training"
    )
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=REPO)
    assert r.returncode != 0
    assert "nowhere: expected an ACDC data set folder" in r.stderr and "python -m common.synthetic.acdc" in r.stderr
    assert not (root / "models").exists() and not (root / "eval").exists()  # nothing made before the data check


def test_inference_config_checks_before_training_and_search(tmp_path):
    """MONAI Label and the zoo's check_properties load inference.json before any model.pt or IGS pattern exists."""
    root = shutil.copytree(
        REPO / "bundles" / BUNDLE, tmp_path / BUNDLE, ignore=shutil.ignore_patterns("models", "eval")
    )
    wf = ConfigWorkflow(
        config_file=str(root / "configs" / "inference.json"),
        meta_file=str(root / "configs" / "metadata.json"),
        logging_file=str(root / "configs" / "logging.conf"),
        workflow_type="inference",
        bundle_root=str(root),
        dataset_dir=str(tmp_path / "data"),
    )
    wf.initialize()
    assert wf.parser["pattern"] == "learned"  # the shipped default, not the tests' "center"
    assert not wf.check_properties()
    undersample = next(
        t for t in wf.parser.get_parsed_content("preprocessing").transforms if "KSpace" in type(t).__name__
    )
    with pytest.raises(FileNotFoundError, match=r"igs_phase_x8\.npy: expected a k-space line pattern .*IGS search"):
        undersample({"image": torch.rand(1, 256, 256)})  # the pattern is read when the first image comes
    assert not (root / "models").exists()
    save_line_pattern(root / "models" / "igs_phase_x8", torch.ones(256), forward_model="magnitude")  # misnamed
    refused = r"igs_phase_x8\.json: expected a pattern learned under the 'phase' .*found 'magnitude'"
    with pytest.raises(ValueError, match=refused):
        undersample({"image": torch.rand(1, 256, 256)})  # inference simulates the phase model it reads patterns of


def test_inference_with_other_network_settings_says_which(trained_bundle):
    tb = trained_bundle(BUNDLE)
    files = [tb.root / "configs" / "inference.json", tb.tmp / "tiny.json"]
    args = [
        "--dataset_dir",
        str(tb.data),
        "--output_dir",
        str(tb.tmp / "mismatch"),
        "--unet_features",
        "[8, 8, 16, 16, 32, 8]",
    ]
    r = subprocess.run(bundle_command(tb.root, files, *args), capture_output=True, text=True, timeout=300, cwd=REPO)
    assert r.returncode != 0
    trained = SPECS[BUNDLE].tiny["unet_features"]
    assert f"found weights trained with image_size={SIZE}, num_classes=4, unet_features={trained}" in r.stderr
    assert f"pass the same overrides, e.g. --unet_features '{json.dumps(trained)}'" in r.stderr
    assert "size mismatch" not in r.stderr  # PyTorch's list of every tensor is not shown


def _multi_gpu(root: Path, step: str, tiny: Path) -> list[Path]:
    """The configs of ``step`` under torchrun as the card types them (multi_gpu_evaluate.json merged on top), plus
    the tiny overrides."""
    return [root / "configs" / c for c in ("train.json", step, "multi_gpu_evaluate.json")] + [tiny]


@pytest.mark.slow
def test_search_under_torchrun_chooses_the_lines_of_one_process(searched, tmp_path):
    """The search with multi_gpu_evaluate.json, 2 gloo processes: each rank caches and scores its share of the
    training batches and every gradient and loss is summed over the ranks in a fixed order, so every step, lookahead,
    guard and swap chooses what the one-process search of ``searched`` chose (its float losses to 1e-6: that run's
    thread count may differ); only rank 0 writes."""
    models, out = searched.root / "models", tmp_path / "two"
    out.mkdir()
    for path in models.glob("loupe_phase_x*"):  # LOUPE's pattern is one of the guards, as in `searched`
        shutil.copy(path, out)
    tiny = tmp_path / "tiny.json"
    tiny.write_text(json.dumps(SPECS[BUNDLE].tiny))
    args = ("--dataset_dir", str(searched.data), "--igs_forward_model", "phase", "--igs#output_dir", str(out))
    logs = torchrun_bundle(searched.root, _multi_gpu(searched.root, "igs_search.json", tiny), tmp_path, *args)
    for acc in (16, 8, 4):
        one = json.loads((models / f"igs_phase_x{acc}.json").read_text())
        two = json.loads((out / f"igs_phase_x{acc}.json").read_text())
        assert [two[k] for k in ("order", "source", "swaps", "nested")] == [
            one[k] for k in ("order", "source", "swaps", "nested")
        ], acc
        assert two["search_loss"] == pytest.approx(one["search_loss"], abs=1e-6)
        assert two["guard_losses"] == pytest.approx(one["guard_losses"], abs=1e-6) and "loupe" in two["guard_losses"]
    assert all("IGS search done" in logs[rank] for rank in (0, 1))
    assert not list(out.glob(".*.tmp"))


@pytest.mark.slow
def test_loupe_under_torchrun_resumes_and_leaves_a_state_one_process_resumes(searched, tmp_path):
    """LOUPE with multi_gpu_evaluate.json (theta in DistributedDataParallel, 2 gloo processes): it resumes the x16
    state one process left after epoch 1 (time limit 0), finishes x16 and stops after x8's first epoch (the time limit,
    agreed by both ranks), x8's state written once, by rank 0; one process then finishes from that state."""
    out = tmp_path / "loupe"
    tiny = tmp_path / "tiny.json"
    tiny.write_text(json.dumps(SPECS[BUNDLE].tiny))
    settings = {"dataset_dir": str(searched.data), "loupe_forward_model": "phase", "loupe#output_dir": str(out)}

    def one_process(time_limit: float | None) -> None:
        files = [str(searched.root / "configs" / c) for c in ("train.json", "loupe.json")] + [str(tiny)]
        meta = str(searched.root / "configs" / "metadata.json")
        bundle_run(
            "run",
            config_file=files,
            meta_file=meta,
            logging_file=False,
            bundle_root=str(searched.root),
            **settings,
            loupe_time_limit=time_limit,
        )

    one_process(0)
    assert [p.name for p in out.glob("loupe_*")] == ["loupe_phase_x16_state.pt"]
    args = [arg for key, value in settings.items() for arg in (f"--{key}", value)]
    logs = torchrun_bundle(
        searched.root, _multi_gpu(searched.root, "loupe.json", tiny), tmp_path, *args, "--loupe_time_limit", "0"
    )
    assert all("LOUPE x16: resuming from" in logs[rank] for rank in (0, 1))
    finished = [re.search(r"LOUPE x16: 2 lines, loss \S+ at the binary pattern", logs[rank]) for rank in (0, 1)]
    assert finished[0] and finished[1] and finished[0][0] == finished[1][0]  # the same theta on both ranks
    assert sorted(p.name for p in out.glob("*.pt")) == ["loupe_phase_x8_state.pt"] and not list(out.glob(".*.tmp"))
    assert torch.load(out / "loupe_phase_x8_state.pt", weights_only=True)["epoch"] == 1
    meta = json.loads((out / "loupe_phase_x16.json").read_text())
    assert meta["epochs"] == 2 and len(meta["loss_history"]) == 2 and meta["num_lines"] == SIZE // 16
    one_process(None)
    assert not list(out.glob("*.pt"))
    for acc in (8, 4):
        meta = json.loads((out / f"loupe_phase_x{acc}.json").read_text())
        assert len(meta["loss_history"]) == 2 and int(np.load(out / f"loupe_phase_x{acc}.npy").sum()) == SIZE // acc


@pytest.mark.slow
def test_comparison_under_torchrun_deals_the_rows_and_writes_what_one_process_writes(searched, tmp_path, monkeypatch):
    """evaluate.json with multi_gpu_evaluate.json, 2 gloo processes, resumed from the states of a stopped two-process
    run (rank 0's and rank 1's files) holding every other row of a one-process run: each rank computes its share of
    the rest (none twice, none of the finished), rank 0 gathers them and writes the tables, per-volume CSVs, intervals
    and figure byte for byte as one process, and merges the rows into one state file."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # one thread per process in both runs (torchrun_bundle's setting)
    args = ["--dataset_dir", str(searched.data), "--forward_models", "['phase']", "--comparison_seeds", "[0, 1]"]
    args += ["--fine_tune_seeds", "[1]", "--comparison_accelerations", "[8]"]
    one, two = tmp_path / "one", tmp_path / "two"
    run_bundle(searched.root, ["train.json", "evaluate.json"], tmp_path, *args, "--output_dir", str(one))
    state = torch.load(one / STATE_FILE, weights_only=False)
    keys = list(state["done"])
    two.mkdir()
    torch.save({**state, "done": {k: state["done"][k] for k in keys[0::4]}}, two / STATE_FILE)
    torch.save({**state, "done": {k: state["done"][k] for k in keys[2::4]}}, two / RANK_STATE_FILES.replace("*", "1"))
    configs = _multi_gpu(searched.root, "evaluate.json", tmp_path / "tiny.json")
    logs = torchrun_bundle(searched.root, configs, tmp_path, *args, "--output_dir", str(two))

    written = sorted(p.name for p in one.iterdir() if p.name != STATE_FILE)
    assert "pattern_comparison_dice_raw.csv" in written and "pattern_comparison_intervals.csv" in written
    assert sorted(p.name for p in two.iterdir() if p.name != STATE_FILE) == written
    for name in written:
        assert (two / name).read_bytes() == (one / name).read_bytes(), name
    row = re.compile(r" - INFO - (phase (?:frozen|fine_tuned) \S+ x\d+(?: seed \d+)?): ")
    computed = [set(row.findall(logs[rank])) for rank in (0, 1)]
    assert not computed[0] & computed[1] and abs(len(computed[0]) - len(computed[1])) <= 1
    assert len(computed[0] | computed[1]) == len(keys) - len(keys[::2])
    assert all(f"resuming with {len(keys[::2])} finished rows" in logs[rank] for rank in (0, 1))
    assert set(torch.load(two / STATE_FILE, weights_only=False)["done"]) == set(keys)
    assert not list(two.glob(RANK_STATE_FILES))
