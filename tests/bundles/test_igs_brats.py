"""igs_brats end to end through `python -m monai.bundle`: train, per-modality IGS search, pattern comparison with Dice
per tumour region, inference to BraTS labels."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser, ckpt_export
from monai.bundle import run as bundle_run
from monai.networks.nets import BasicUNet

from common.data import BRATS_MODALITIES as MODS
from common.synthetic.brats import VALIDATION_FOLDERS
from common.transforms import KSpaceUndersample, ZScoreSlices
from tests.bundles.conftest import REPO, SPECS, check_mlflow_run, run_bundle, torchrun_bundle

BUNDLE = "igs_brats"
SIZE = 32  # the synthetic slices of conftest.SPECS: 32x32, lines along H
MODALITIES = 4


@pytest.fixture(scope="module")
def searched(trained_bundle):
    """The tiny trained bundle with per-modality IGS and LOUPE patterns under the phase-aware forward model."""
    tb = trained_bundle(BUNDLE)
    run_bundle(tb.root, ["train.json", "igs_search.json"], tb.tmp, "--dataset_dir", str(tb.data))
    run_bundle(tb.root, ["train.json", "loupe.json"], tb.tmp, "--dataset_dir", str(tb.data))
    return tb


def test_training_logs_dice_per_tumour_region(trained_bundle):
    tb = trained_bundle(BUNDLE)
    assert (tb.root / "models" / "model.pt").is_file() and (tb.root / "models" / "checkpoint_last.pt").is_file()
    for name in ("val_dice_WT", "val_dice_TC", "val_dice_ET", "val_mean_dice"):
        assert name in tb.log


def test_igs_search_writes_one_pattern_per_modality_at_exact_budgets(searched):
    models = searched.root / "models"
    for acc in (4, 8, 16):
        mask = np.load(models / f"igs_phase_x{acc}.npy")
        meta = json.loads((models / f"igs_phase_x{acc}.json").read_text())
        assert mask.shape == (MODALITIES, SIZE) and mask.sum(1).tolist() == [SIZE // acc] * MODALITIES
        assert meta["per_channel"] and meta["axis"] == -2 and len(meta["orders"]) == MODALITIES
        for row, order in zip(mask, meta["orders"]):  # one line set per modality, each line once
            assert sorted(np.flatnonzero(row).tolist()) == sorted(order) and len(set(order)) == SIZE // acc
        # never beaten on its own objective by a baseline at its budget (the same lines for every modality)
        assert meta["search_loss"] <= min(meta["guard_losses"].values()) + 1e-6
        loupe = np.load(models / f"loupe_phase_x{acc}.npy")
        assert loupe.shape == (MODALITIES, SIZE) and loupe.sum(1).tolist() == [SIZE // acc] * MODALITIES


def test_comparison_scores_every_pattern_by_tumour_region(searched):
    args = ["--dataset_dir", str(searched.data), "--forward_models", "['phase']"]
    args += ["--comparison_seeds", "[0, 1]", "--fine_tune_seeds", "[1]"]
    run_bundle(searched.root, ["train.json", "evaluate.json"], searched.tmp, *args)
    out = searched.root / "eval"
    rows = list(csv.DictReader(open(out / "pattern_comparison.csv")))
    expected = set()
    for protocol, seeds in (("frozen", ("0", "1")), ("fine_tuned", ("1",))):
        expected.add((protocol, "full", "1", ""))
        for acc in ("4", "8", "16"):
            expected |= {(protocol, p, acc, "") for p in ("igs", "loupe", "center", "one_sided")}
            expected |= {(protocol, p, acc, s) for p in ("equispaced", "random") for s in seeds}
    combos = [(r["protocol"], r["pattern"], r["acceleration"], r["seed"]) for r in rows]
    assert set(combos) == expected and len(combos) == len(expected)
    for r in rows:
        assert int(r["lines"]) == SIZE // int(r["acceleration"])  # per modality, learned or not
        regions = [float(r[f"dice_{k}"]) for k in ("WT", "TC", "ET")]
        classes = [float(r[f"dice_{k}"]) for k in ("background", "oedema", "non-enhancing core", "enhancing")]
        assert all(math.isnan(v) or 0.0 <= v <= 1.0 for v in regions + classes)
        assert float(r["mean_fg"]) == pytest.approx(np.nanmean(regions), abs=1e-6)  # the headline: mean over regions
        assert float(r["mean"]) == pytest.approx(np.nanmean(classes), abs=1e-6)  # the authors' figure: the classes
        assert float(r["dice_ET"]) == pytest.approx(float(r["dice_enhancing"]), abs=1e-9) or math.isnan(
            float(r["dice_ET"])
        )  # ET is the single class 3
    md = (out / "pattern_comparison.md").read_text()
    assert "**Dice, mean over WT, TC, ET (in brackets" in md and "**HD95 (mm), mean over WT, TC, ET**" in md
    header = (out / "pattern_comparison_hd95_raw.csv").read_text().splitlines()[0]
    assert all(k in header for k in ("WT", "TC", "ET"))


def test_inference_writes_brats_labels_on_the_input_grid(searched, tmp_path):
    validation = searched.data.parent / VALIDATION_FOLDERS[2020]
    out = tmp_path / "pred"
    args = ["--dataset_dir", str(validation), "--output_dir", str(out), "--pattern", "learned"]
    run_bundle(searched.root, ["inference.json"], searched.tmp, *args)
    cases = sorted(p for p in validation.iterdir() if p.is_dir())
    preds = sorted(out.glob("*.nii.gz"))
    assert len(preds) == len(cases) >= 1
    for case, pred in zip(cases, preds):
        image = nib.load(next(case.glob("*_flair.nii*")))
        seg = nib.load(pred)
        assert seg.shape == image.shape and np.allclose(seg.affine, image.affine)
        assert set(np.unique(np.asarray(seg.dataobj)).tolist()) <= {0, 1, 2, 4}


RECONSTRUCTION_STEPS = [
    *(["train.json", step, "reconstruction.json"] for step in ("igs_search.json", "loupe.json", "evaluate.json")),
    ["train.json", "reconstruction.json"],
    ["inference.json", "reconstruction_inference.json"],
]


@pytest.mark.parametrize("step", RECONSTRUCTION_STEPS, ids=lambda c: "+".join(c))
def test_reconstruction_network_output_is_bounded_to_the_target_range(step):
    """The reconstruction override's network (U-Net then sigmoid) as every step, inference included, parses it: its
    output lies in [0, 1], the target's range, even for inputs far outside the training range, so no loss can learn a
    channel sign-flipped and the comparison's clip to [0, 1] changes nothing; the U-Net inside is the segmentation
    one."""
    parser = ConfigParser()
    configs = REPO / "bundles" / BUNDLE / "configs"
    parser.read_config([str(configs / c) for c in step])
    parser.update(SPECS[BUNDLE].tiny)
    net = parser.get_parsed_content("network_def").eval()
    assert isinstance(net[0], BasicUNet) and net[0].final_conv.out_channels == MODALITIES
    torch.manual_seed(0)
    with torch.no_grad():
        out = net(100.0 * torch.randn(*SPECS[BUNDLE].input_shape))
    assert out.shape == SPECS[BUNDLE].input_shape and out.min() >= 0.0 and out.max() <= 1.0
    assert out.std() > 0.0  # not a constant
    if "resume_fingerprint" in parser:  # training steps: old unbounded checkpoints are refused
        assert parser.get_parsed_content("resume_fingerprint")["output_activation"] == "Sigmoid()"


TASK_PATTERNS = {"classification": ["igs", "center", "random"], "reconstruction": ["igs_ssim", "center", "random"]}


def tiny_configs(tb, configs: list[str]) -> list[str]:
    """The bundle's ``configs`` plus the tiny overrides (written to ``tb.tmp``), as paths."""
    tiny = tb.tmp / "tiny.json"
    tiny.write_text(json.dumps(SPECS[BUNDLE].tiny))
    return [str(tb.root / "configs" / c) for c in configs] + [str(tiny)]


def run_in_process(tb, configs: list[str], run_id: str = "run", **overrides) -> None:
    """``monai.bundle.run`` on the bundle's configs plus the tiny overrides, in this process (no interpreter start
    per step; the bundle's logging configuration left alone)."""
    files = tiny_configs(tb, configs)
    meta = str(tb.root / "configs" / "metadata.json")
    bundle_run(run_id, config_file=files, meta_file=meta, logging_file=False, bundle_root=str(tb.root), **overrides)


def task_network(tb, task: str) -> torch.nn.Module:
    """The task's ``network_def`` of its inference configs with ``models/<task>/model.pt`` loaded, in eval mode."""
    parser = ConfigParser()
    parser.read_config(tiny_configs(tb, ["inference.json", f"{task}_inference.json"]))
    net = parser.get_parsed_content("network_def")
    net.load_state_dict(torch.load(tb.root / "models" / task / "model.pt", map_location="cpu", weights_only=True))
    return net.eval()


def reference_input(case: Path, pattern: Path) -> torch.Tensor:
    """The network input of one case built here: the four modalities ``(4, H, W, D)``, each axial slice given its
    phase map (``inference.json``'s forward model and ``phase_seed`` 0), undersampled with the learned per-modality
    pattern and z-scored per slice and channel -> ``(D, 4, H, W)``."""
    image = np.stack([np.asarray(nib.load(case / f"{case.name}_{m}.nii.gz").dataobj, np.float32) for m in MODS])
    x = KSpaceUndersample(pattern, pe_dim=-2, forward_model="phase", phase_seed=0)(torch.as_tensor(image))
    return ZScoreSlices()(torch.as_tensor(x)).movedim(-1, 0)


def check_task_inference(tb, task: str, tmp_path: Path) -> None:
    """``inference.json`` + ``<task>_inference.json`` on the validation cases with the learned x8 pattern: the
    CSV of slice probabilities (classification) or one NIfTI per modality on the input grid (reconstruction), each
    equal to the task network applied here to the undersampled input; a missing pattern or weights file is named."""
    validation = tb.data.parent / VALIDATION_FOLDERS[2020]
    cases = sorted(p for p in validation.iterdir() if p.is_dir())
    out = tmp_path / f"{task}_inference"
    args = {"dataset_dir": str(validation), "output_dir": str(out), "pattern": "learned", "acceleration": 8}
    if task == "reconstruction":
        args["igs_loss"] = "ssim"
    configs = ["inference.json", f"{task}_inference.json"]
    run_in_process(tb, configs, **args)
    net = task_network(tb, task)
    name = "igs" if task == "classification" else "igs_ssim"
    with torch.no_grad():
        expected = net(reference_input(cases[0], tb.root / "models" / task / f"{name}_phase_x8.npy"))
    depth = nib.load(next(cases[0].glob("*_flair.nii.gz"))).shape[-1]
    if task == "classification":
        rows = list(csv.DictReader(open(out / "slice_probabilities.csv")))
        assert list(rows[0]) == ["case", "slice", "p_no_tumour", "p_tumour", "prediction"]
        assert [(r["case"], int(r["slice"])) for r in rows] == [(c.name, k) for c in cases for k in range(depth)]
        for r in rows:
            p0, p1 = float(r["p_no_tumour"]), float(r["p_tumour"])
            assert 0.0 <= p1 <= 1.0 and p0 + p1 == pytest.approx(1.0, abs=1e-5)
            assert r["prediction"] == ("tumour" if p1 > p0 else "no_tumour")
        first = torch.tensor([float(r["p_tumour"]) for r in rows[:depth]])
        torch.testing.assert_close(first, torch.softmax(expected, 1)[:, 1], atol=1e-4, rtol=1e-4)
    else:
        for case in cases:
            image = nib.load(case / f"{case.name}_flair.nii.gz")
            for k, m in enumerate(MODS):
                recon = nib.load(out / f"{case.name}_flair_recon_{m}.nii.gz")
                values = np.asarray(recon.dataobj)
                assert recon.shape == image.shape and np.allclose(recon.affine, image.affine)
                assert values.dtype == np.float32 and values.min() >= 0.0 and values.max() <= 1.0
                if case == cases[0]:
                    reference = expected[:, k].clamp(0, 1).permute(1, 2, 0).numpy()
                    np.testing.assert_allclose(values, reference, atol=1e-4)
    missing = {  # no x16 search in this test; no weights in an empty folder
        tb.root / "models" / task / f"{name}_phase_x16.npy": {"acceleration": 16},
        tmp_path / "none" / "model.pt": {"pattern": "center", "ckpt_dir": str(tmp_path / "none")},
    }
    for path, override in missing.items():
        with pytest.raises(Exception) as raised:  # MONAI wraps what a transform or handler raises
            run_in_process(tb, configs, **{**args, **override})
        causes = [raised.value]
        while causes[-1].__cause__ is not None:
            causes.append(causes[-1].__cause__)
        assert any(isinstance(e, FileNotFoundError) and str(path) in str(e) for e in causes), raised.value


def check_task_export(tb, task: str, tmp_path: Path) -> None:
    """``ckpt_export`` of the task network (in this process) gives a TorchScript module equal to the eager one."""
    ts = tmp_path / f"{task}.ts"
    ckpt_export(
        "network_def",
        filepath=str(ts),
        ckpt_file=str(tb.root / "models" / task / "model.pt"),
        meta_file=str(tb.root / "configs" / "metadata.json"),
        config_file=tiny_configs(tb, ["inference.json", f"{task}_inference.json"]),
        bundle_root=str(tb.root),
    )
    x = torch.randn(*SPECS[BUNDLE].input_shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        scripted = torch.jit.load(str(ts), map_location="cpu").eval()
        torch.testing.assert_close(scripted(x), task_network(tb, task)(x), atol=1e-5, rtol=1e-4)


@pytest.mark.slow
@pytest.mark.parametrize("task", ["classification", "reconstruction"])
def test_task_trains_searches_and_compares_through_its_override(trained_bundle, task, tmp_path):
    """Each task's override merged on the segmentation configs: its own training (ResNet-18 / U-Net, tracked with
    MLflow), its own IGS search with its loss, and the comparison scored by its metrics, in its own folders; then its
    inference, and its network exported to TorchScript."""
    tb = trained_bundle(BUNDLE)
    data = {"dataset_dir": str(tb.data)}
    run_in_process(tb, ["train.json", f"{task}.json"], "training", tracking="mlflow", **data)
    key = "val_auc" if task == "classification" else "val_ssim"
    check_mlflow_run(tb.root / "eval" / task / "mlruns.db", SPECS[BUNDLE].tiny["epochs"], key)
    igs = {
        "igs_accelerations": [8, 4],
        "igs_lookahead": 0,
        **({} if task == "classification" else {"igs_loss": "ssim"}),
    }
    run_in_process(tb, ["train.json", "igs_search.json", f"{task}.json"], **data, **igs)
    args = {"forward_models": ["phase"], "comparison_seeds": [0, 1], "fine_tune_seeds": [1]}
    args.update(comparison_patterns=TASK_PATTERNS[task], comparison_accelerations=[8])
    run_in_process(tb, ["train.json", "evaluate.json", f"{task}.json"], **data, **args)
    models, out = tb.root / "models" / task, tb.root / "eval" / task
    assert (models / "model.pt").is_file() and (models / "checkpoint_last.pt").is_file()
    name = TASK_PATTERNS[task][0]
    meta = json.loads((models / f"{name}_phase_x8.json").read_text())
    assert meta["loss"] == ("ce" if task == "classification" else "ssim") and len(meta["orders"]) == MODALITIES
    rows = list(csv.DictReader(open(out / "pattern_comparison.csv")))
    assert len(rows) == (1 + 2 + 2) + (1 + 2 + 1)  # frozen, fine-tuned (random: seed 1 only)
    keys = ["accuracy", "auc"] if task == "classification" else [f"ssim_{m}" for m in ("flair", "t1", "t1ce", "t2")]
    for r in rows:
        assert int(r["lines"]) == SIZE // int(r["acceleration"])
        assert all(0.0 <= float(r[k]) <= 1.0 for k in keys if r[k] != "nan") and "mean_fg" not in r
    if task == "reconstruction":
        assert all(float(r["ssim"]) == pytest.approx(np.mean([float(r[k]) for k in keys]), abs=1e-6) for r in rows)
    check_task_inference(tb, task, tmp_path)
    check_task_export(tb, task, tmp_path)


@pytest.mark.slow
def test_per_modality_search_under_torchrun_chooses_the_lines_of_one_process(searched, tmp_path):
    """The per-modality search (lookahead, swaps) with multi_gpu_evaluate.json, 2 gloo processes: each rank caches
    and scores its share of the training batches, the sums go over the ranks in a fixed order, and every modality's
    lines are those of the one-process search of ``searched`` (made before LOUPE's patterns existed, as this one:
    the same guards; its float losses to 1e-6, since that run's thread count may differ)."""
    out = tmp_path / "two"
    tiny = tmp_path / "tiny.json"
    tiny.write_text(json.dumps(SPECS[BUNDLE].tiny))
    configs = [searched.root / "configs" / c for c in ("train.json", "igs_search.json", "multi_gpu_evaluate.json")]
    args = ("--dataset_dir", str(searched.data), "--igs#output_dir", str(out))
    logs = torchrun_bundle(searched.root, [*configs, tiny], tmp_path, *args)
    for acc in (16, 8, 4):
        one = json.loads((searched.root / "models" / f"igs_phase_x{acc}.json").read_text())
        two = json.loads((out / f"igs_phase_x{acc}.json").read_text())
        assert len(two["orders"]) == MODALITIES and two["orders"] == one["orders"], acc
        assert two["search_loss"] == pytest.approx(one["search_loss"], abs=1e-6)
        assert two["guard_losses"] == pytest.approx(one["guard_losses"], abs=1e-6)
    assert all("IGS search done" in logs[rank] for rank in (0, 1)) and (out / "igs_phase_channels.png").is_file()
