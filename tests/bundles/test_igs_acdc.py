"""igs_acdc end to end through `python -m monai.bundle`: train, IGS search, pattern comparison, inference."""

from __future__ import annotations

import csv
import json
import math
import shutil
import subprocess

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.bundle import ConfigWorkflow

from common.transforms import save_line_pattern
from tests.bundles.conftest import REPO, SPECS, bundle_command, run_bundle

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
