"""resunet_zoom_atlas end to end through `python -m monai.bundle`: the zoom-out stage resumes from the zoom-in
weights, the evaluation scores both stages with both inference modes, inference writes masks on the input grid."""

from __future__ import annotations

import csv

import nibabel as nib
import numpy as np
import torch

from common.data import atlas_datalist, find_atlas_scans, split_by_fold
from tests.bundles.conftest import run_bundle

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
