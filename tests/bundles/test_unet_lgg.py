"""unet_lgg end to end through `python -m monai.bundle`: train, per-volume evaluation, kaggle_3m-style inference."""

from __future__ import annotations

import csv
import math
import shutil
import subprocess

import nibabel as nib
import numpy as np
import pytest
import tifffile
import torch
from monai.bundle import ConfigParser

from common.data import lgg_patients
from tests.bundles.conftest import REPO, bundle_command, run_bundle
from tests.support.reference import seed_dice_loss

BUNDLE = "unet_lgg"
SIZE = 256  # the tiny test copy keeps the real slice size


def test_training_wrote_checkpoints_and_per_volume_dice(trained_bundle):
    tb = trained_bundle(BUNDLE)
    assert (tb.root / "models" / "model.pt").is_file() and (tb.root / "models" / "checkpoint_last.pt").is_file()
    assert "LGG train: 3 patients" in tb.log and "LGG val: 1 patients" in tb.log  # 6 patients: 2 test, fold 0 of 5
    assert "Metrics -- val_mean_dice" in tb.log and "Metrics -- train_mean_dice" in tb.log


def test_loss_is_the_seeds_soft_dice_with_smooth_one():
    parser = ConfigParser()
    parser.read_config(str(REPO / "bundles" / BUNDLE / "configs" / "train.json"))
    loss = parser.get_parsed_content("loss")
    logits = torch.randn(4, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    target = (torch.rand(4, 1, 16, 16, generator=torch.Generator().manual_seed(1)) > 0.7).float()
    torch.testing.assert_close(loss(logits, target), seed_dice_loss(torch.sigmoid(logits), target))
    assert parser["learning_rate"] == 1e-4 and parser["epochs"] == 150 and parser["batch_size"] == 8
    assert parser["lr_step_epochs"] == 30 and parser["lr_gamma"] == 0.1 and parser["depth"] == 4


def test_evaluation_writes_per_volume_table_and_figure(trained_bundle):
    tb = trained_bundle(BUNDLE)
    run_bundle(tb.root, ["train.json", "evaluate.json"], tb.tmp, "--dataset_dir", str(tb.data))
    out = tb.root / "eval"
    rows = list(csv.DictReader(open(out / "evaluation.csv")))
    assert sorted(r["name"] for r in rows) == sorted(p.name for p in lgg_patients(tb.data, "test"))
    for r in rows:
        for k in ("dice_volume", "dice_volume_lcc", "dice_slice_all"):
            assert 0.0 <= float(r[k]) <= 1.0
        assert int(r["tumour_slices"]) >= 1 and int(r["slices"]) >= int(r["tumour_slices"])
        assert r["surface"] in ("measured", "missed", "spurious", "absent") and "hd95_mm" not in r
        assert (r["surface"] != "measured") == math.isnan(float(r["hd95_px"]))  # kaggle_3m: no geometry, pixels
    md = (out / "evaluation.md").read_text()
    for title in ("Dice per volume |", "Dice per volume, largest 3D component kept |", "Dice per slice, slices"):
        assert f"| {title}" in md
    assert "| HD95 per volume (pixels: 1 per pixel along H and W, 1 per slice) |" in md
    assert (out / "evaluation_slices.png").stat().st_size > 1000


@pytest.mark.parametrize("layout", ["kaggle_3m", "one_patient"])
def test_inference_writes_kaggle_3m_masks(trained_bundle, tmp_path, layout):
    tb = trained_bundle(BUNDLE)
    src = tmp_path / "in"
    for image in (tb.data / "kaggle_3m").glob("*/*.tif"):
        if not image.name.endswith("_mask.tif"):  # slices only: inference needs no masks
            (src / image.parent.name).mkdir(parents=True, exist_ok=True)
            shutil.copy(image, src / image.parent.name / image.name)
    patients = sorted(p.name for p in src.iterdir())
    if layout == "one_patient":
        src, patients = src / patients[0], patients[:1]
    out = tmp_path / "out"
    run_bundle(
        tb.root,
        ["inference.json"],
        tb.tmp,
        "--dataset_dir",
        str(src),
        "--output_dir",
        str(out),
        "--save_nifti",
        "True",
        "--largest_component",
        str(layout == "one_patient"),
    )
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == patients
    for patient in patients:
        images = sorted((tb.data / "kaggle_3m" / patient).glob("*[0-9].tif"))
        masks = list((out / patient).iterdir())
        assert {m.name for m in masks} == {i.name.replace(".tif", "_mask.tif") for i in images}
        for m in masks:
            mask = tifffile.imread(m)
            assert mask.shape == (SIZE, SIZE) and mask.dtype == np.uint8 and set(np.unique(mask)) <= {0, 255}
        assert nib.load(out / f"{patient}.nii.gz").shape == (SIZE, SIZE, len(images))


def test_missing_dataset_dir_explains_how_to_generate(tmp_path):
    parser = ConfigParser()
    parser.read_config(str(REPO / "bundles" / BUNDLE / "configs" / "train.json"))
    parser["dataset_dir"] = str(tmp_path / "nowhere")
    with pytest.raises(RuntimeError) as e:
        parser.get_parsed_content("train#dataset#data")
    cause = e.value.__cause__
    assert isinstance(cause, FileNotFoundError) and "nowhere: expected a kaggle_3m data set folder" in str(cause)
    assert "python -m common.synthetic.lgg" in str(cause)
    root = shutil.copytree(
        REPO / "bundles" / BUNDLE, tmp_path / BUNDLE, ignore=shutil.ignore_patterns("models", "eval")
    )
    cmd = bundle_command(
        root, [root / "configs" / "train.json"], "--dataset_dir", str(tmp_path / "nowhere"), run_id="training"
    )
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=REPO)
    assert r.returncode != 0 and "nowhere: expected a kaggle_3m data set folder" in r.stderr
    assert not (root / "models").exists() and not (root / "eval").exists()  # nothing made before the data check
