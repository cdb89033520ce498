"""resunet_zoom_atlas end to end through `python -m monai.bundle`: the zoom-out stage resumes from the zoom-in
weights, the evaluation scores both stages with both inference modes, inference writes masks on the input grid;
damaged data (a NaN voxel, a truncated file, a non-binary mask) stops training with exit code 1 naming the file; no
random flips unless asked for (the original's loader has none)."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser
from monai.transforms import RandFlipd

from common.data import atlas_datalist, find_atlas_scans, split_by_fold
from tests.bundles.conftest import REPO, fresh_copy, run_bundle
from tests.support.damage import truncate

BUNDLE = "resunet_zoom_atlas"


def test_zoom_out_evaluation_and_inference(trained_bundle):
    tb = trained_bundle(BUNDLE)
    models = tb.root / "models"
    zoom_in = torch.load(models / "model.pt", map_location="cpu", weights_only=True)
    # zoom-out: larger crops, lower lr, started from the zoom-in weights, its own checkpoints
    run_bundle(
        tb.root, ["train.json", "zoom_out.json"], tb.tmp, "--dataset_dir", str(tb.data), "--patch_size", "[24,24,24]"
    )
    last = torch.load(models / "checkpoint_zoom_out.pt", map_location="cpu", weights_only=False)
    assert last["fingerprint"]["stage"] == "zoom_out" and last["fingerprint"]["learning_rate"] == 1e-4
    assert last["fingerprint"]["patch_size"] == [24, 24, 24]
    assert torch.load(models / "model.pt", map_location="cpu", weights_only=True).keys() == zoom_in.keys()
    zoom_out = torch.load(models / "model_zoom_out.pt", map_location="cpu", weights_only=True)
    assert any(not torch.equal(zoom_out[k], zoom_in[k]) for k in zoom_in)

    # evaluation: 2 models x 2 inference modes x the 2 test subjects
    run_bundle(
        tb.root, ["train.json", "evaluate.json"], tb.tmp, "--dataset_dir", str(tb.data), "--eval_roi_size", "[16,16,16]"
    )
    rows = list(csv.DictReader(open(tb.root / "eval" / "lesion_scores.csv")))
    settings = [(r["model"], r["inference"]) for r in rows]
    assert len(rows) == 8 and len(set(settings)) == 4
    test = [d["case"] for d in split_by_fold(atlas_datalist(tb.data)["training"], "test")]
    assert len(test) == 2 and all(
        sorted(r["case"] for r in rows if (r["model"], r["inference"]) == s) == sorted(test) for s in settings
    )
    for r in rows:
        assert 0 <= float(r["dice"]) <= 1 and int(r["label_voxels"]) > 0
    report = (tb.root / "eval" / "lesion_report.md").read_text()
    assert "zoom-in & zoom-out" in report and "centre crop" in report and "sliding window" in report

    # inference on Testing/ (T1w only): the latest stage's weights, one mask per scan on the input grid
    r = run_bundle(tb.root, ["inference.json"], tb.tmp, "--dataset_dir", str(tb.data))
    assert "model_zoom_out.pt" in r.stdout + r.stderr
    out = tb.root / "eval" / "inference"
    for scan in find_atlas_scans(tb.data, "Testing", require_label=False):
        image = nib.load(str(scan.image))
        seg = nib.load(str(out / scan.image.name.replace("_T1w.nii.gz", "_T1w_seg.nii.gz")))
        assert seg.shape == image.shape and np.allclose(seg.affine, image.affine)
        assert set(np.unique(np.asarray(seg.dataobj))) <= {0, 1}


def _damage(image: str, mask: str, damage: str) -> str:
    """Damage one training scan's T1w image or lesion mask in place; returns the damaged file."""
    if damage == "truncated":
        truncate(Path(image))
        return image
    path = image if damage == "nan_voxel" else mask
    img = nib.load(path)
    data = np.asarray(img.dataobj).astype(np.float32)
    if damage == "nan_voxel":
        data[tuple(s // 2 for s in data.shape)] = np.nan
    else:
        data[data > 0] = 2
    nib.save(nib.Nifti1Image(data, img.affine), path)  # float32 on disk (the original header's int16 holds no NaN)
    return path


@pytest.mark.parametrize("damage", ["nan_voxel", "truncated", "mask_value_2"])
def test_damaged_data_is_refused_with_exit_code_1_naming_the_file(bundle_data, tmp_path, damage):
    """Before any CacheDataset is built: a NaN voxel used to train every weight to NaN with exit code 0, a truncated
    file or a refused mask to abort in MONAI's caching threads with exit code 134 (the truncated file unnamed)."""
    data = shutil.copytree(bundle_data(BUNDLE), tmp_path / "data")
    item = split_by_fold(atlas_datalist(data, read_voxels=False)["training"], "train")[0]
    damaged = _damage(item["image"], item["label"][0], damage)
    root = fresh_copy(BUNDLE, tmp_path)
    r = run_bundle(
        root, ["train.json"], tmp_path, "--dataset_dir", str(data), run_id="training", timeout=300, check=False
    )
    expected = {
        "nan_voxel": "expected finite voxel values, found 1 NaN and 0 inf",
        "truncated": "expected a readable NIfTI volume (every voxel of the file), found EOFError",
        "mask_value_2": "expected a binary lesion mask (values 0/1 or 0/255), found 0 (",
    }[damage]
    assert r.returncode == 1, f"exit code {r.returncode}:\n{r.stderr[-3000:]}"
    assert f"{damaged}: {expected}" in r.stderr
    assert damage != "mask_value_2" or "voxels), 2 (" in r.stderr
    assert not (root / "models").exists()


def test_no_random_flips_by_default():
    """The original's training loader is deterministic: the flips are there only with ``flip_prob`` > 0."""
    parser = ConfigParser()
    parser.read_config(REPO / "bundles" / BUNDLE / "configs" / "train.json")
    flips = [t for t in parser.get_parsed_content("train#random_transforms") if isinstance(t, RandFlipd)]
    assert [t.prob for t in flips] == [0.0, 0.0, 0.0]
    parser["flip_prob"] = 0.5
    assert [
        t.prob for t in parser.get_parsed_content("train#random_transforms", lazy=False) if isinstance(t, RandFlipd)
    ] == [0.5] * 3
