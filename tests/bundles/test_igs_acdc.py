"""igs_acdc end to end through `python -m monai.bundle`: train, IGS search, pattern comparison, inference."""

from __future__ import annotations

import csv
import json
import subprocess

import nibabel as nib
import numpy as np
import pytest

from tests.bundles.conftest import REPO, bundle_command, run_bundle

BUNDLE = "igs_acdc"
SIZE = 32  # conftest.SPECS tiny image_size


@pytest.fixture(scope="module")
def searched(trained_bundle):
    tb = trained_bundle(BUNDLE)
    run_bundle(tb.root, ["train.json", "igs_search.json"], tb.tmp, "--dataset_dir", str(tb.data))
    return tb


def test_training_wrote_checkpoints_and_per_class_dice(trained_bundle):
    tb = trained_bundle(BUNDLE)
    assert (tb.root / "models" / "model.pt").is_file() and (tb.root / "models" / "checkpoint_last.pt").is_file()
    for name in ("val_dice_rv", "val_dice_myocardium", "val_dice_lv", "val_mean_dice"):
        assert name in tb.log


def test_igs_search_writes_patterns_at_exact_budgets(searched):
    models = searched.root / "models"
    order = json.loads((models / "igs_x4.json").read_text())["order"]
    assert order[0] == SIZE // 2 and len(set(order)) == len(order)
    for acc in (4, 8, 16):
        mask = np.load(models / f"igs_x{acc}.npy")
        meta = json.loads((models / f"igs_x{acc}.json").read_text())
        assert mask.shape == (SIZE,) and int(mask.sum()) == SIZE // acc == meta["num_lines"]
        assert meta["width"] == SIZE and meta["acceleration"] == acc and meta["order"] == order[: SIZE // acc]
    assert (models / "igs_search.png").stat().st_size > 1000


def test_evaluation_table_covers_every_pattern_and_protocol(searched):
    run_bundle(searched.root, ["train.json", "evaluate.json"], searched.tmp, "--dataset_dir", str(searched.data))
    out = searched.root / "eval"
    rows = list(csv.DictReader(open(out / "pattern_comparison.csv")))
    combos = {(r["protocol"], r["pattern"], r["acceleration"]) for r in rows}
    for protocol in ("frozen", "fine_tuned"):
        assert (protocol, "full", "1") in combos
        for pattern in ("igs", "center", "equispaced", "random"):
            for acc in ("4", "8", "16"):
                assert (protocol, pattern, acc) in combos
    assert len(rows) == 2 * (1 + 4 * 3)
    for r in rows:
        assert int(r["lines"]) == SIZE // int(r["acceleration"])
        for k in ("dice_background", "dice_rv", "dice_myocardium", "dice_lv", "mean_fg", "mean"):
            assert 0.0 <= float(r[k]) <= 1.0
    assert "| frozen | igs |" in (out / "pattern_comparison.md").read_text()
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


def test_missing_dataset_dir_explains_how_to_generate(trained_bundle, tmp_path):
    tb = trained_bundle(BUNDLE)
    cmd = bundle_command(
        tb.root, [tb.root / "configs" / "train.json"], "--dataset_dir", str(tmp_path / "nowhere"), run_id="training"
    )
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=REPO)
    assert r.returncode != 0
    assert "nowhere: expected an ACDC data set folder" in r.stderr and "python -m common.synthetic.acdc" in r.stderr
