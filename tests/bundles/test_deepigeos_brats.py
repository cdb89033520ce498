"""deepigeos_brats end to end through `python -m monai.bundle`: every training stage on the one before it, the
interactive evaluation, NIfTI inference on the input grid, the refinement call for MONAI Label, TorchScript export
of R-Net and of the CRF wrappers, and the 2D variant."""

from __future__ import annotations

import csv
import json
import re
import shutil
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser
from monai.transforms import LoadImage

from common.data import fold_of
from common.synthetic.brats import TRAINING_FOLDERS, VALIDATION_FOLDERS, write_synthetic_brats
from tests.bundles.conftest import DEEPIGEOS_STAGES as STAGES
from tests.bundles.conftest import REPO, SPECS, bundle_command, fresh_copy, run_bundle, torchrun_bundle
from tests.support.damage import truncate

BUNDLE = "deepigeos_brats"


@pytest.fixture(scope="module")
def staged(deepigeos_staged):
    """The tiny trained bundle with every later stage trained on it (tests/conftest.py, shared with the app tests)."""
    return deepigeos_staged


def parser_of(tb, configs: list[str], tiny: bool = True) -> ConfigParser:
    parser = ConfigParser()
    files = [str(tb.root / "configs" / c) for c in configs] + ([str(tb.tmp / "tiny.json")] if tiny else [])
    parser.read_config(files)
    parser.update({"bundle_root": str(tb.root), "dataset_dir": str(tb.data), "device": "$torch.device('cpu')"})
    return parser


def test_each_stage_writes_its_weights_with_its_settings(staged):
    models = staged.root / "models"
    for name in ["model.pt", *STAGES]:
        info = json.loads((models / name.replace(".pt", ".json")).read_text())
        assert (models / name).is_file() and info["best_metric"] is not None, name
        assert info["settings"]["features"] == SPECS[BUNDLE].tiny["features"]
    crf = {"crf_window": 3, "crf_iterations": 2, "crf_hidden": [32, 16]}
    assert json.loads((models / "pnet_crf.json").read_text())["settings"].items() >= crf.items()
    rnet = json.loads((models / "rnet.json").read_text())["settings"]
    assert rnet["geodesic_lambda"] == 1.0
    clicks = {"rounds": 5, "training_ball_radius": 3, "click_slice_choice": "all_errors", "click_variants": 1}
    assert rnet.items() >= clicks.items()  # how R-Net's training clicks were drawn, in the weights' settings
    euclidean = json.loads((models / "rnet_euclidean.json").read_text())["settings"]
    assert euclidean["geodesic_lambda"] == 0.0 and euclidean["geodesic_scale"] == 5.85  # the matched scale
    keys = torch.load(models / "rnet_crf.pt", map_location="cpu", weights_only=True).keys()
    assert {k.split(".")[0] for k in keys} == {"backbone", "crf"}
    for stage in ("pnet_crf", "rnet", "rnet_euclidean", "rnet_crf"):  # each stage resumes from its own file
        assert (models / f"checkpoint_last_{stage}.pt").is_file()


def test_joint_stages_start_from_the_earlier_weights(staged):
    """The CRF stages load the earlier stage into their parts before training (and before any resume)."""
    parser = parser_of(staged, STAGES["pnet_crf.pt"])
    parser.get_parsed_content("init_weights")
    net = parser.get_parsed_content("network_def")
    pnet = torch.load(staged.root / "models" / "model.pt", map_location="cpu", weights_only=True)
    for k, v in net.backbone.state_dict().items():
        torch.testing.assert_close(v, pnet[k])
    parser = parser_of(staged, STAGES["rnet_crf.pt"])
    parser.get_parsed_content("init_weights")
    net = parser.get_parsed_content("network_def")
    rnet = torch.load(staged.root / "models" / "rnet.pt", map_location="cpu", weights_only=True)
    joint = torch.load(staged.root / "models" / "pnet_crf.pt", map_location="cpu", weights_only=True)
    for k, v in net.backbone.state_dict().items():
        torch.testing.assert_close(v, rnet[k])
    for k, v in net.crf.state_dict().items():  # CRF-Net(fu) starts from the trained CRF-Net(f)
        torch.testing.assert_close(v, joint[f"crf.{k}"])


def test_evaluation_reports_every_round_with_its_clicks(staged):
    out = staged.tmp / "evaluation"
    run_bundle(
        staged.root,
        ["train.json", "evaluate.json"],
        staged.tmp,
        "--dataset_dir",
        str(staged.data),
        "--rounds",
        "3",
        "--output_dir",
        str(out),
    )
    summary = list(csv.DictReader(open(out / "interactive_evaluation.csv")))
    automatic = ["P-Net", "P-Net + CRF-Net(f)"]
    interactive = ["R-Net", "R-Net + CRF-Net(fu)", "R-Net, Euclidean maps", "Balls at the clicks, no network"]
    assert [(r["method"], r["round"]) for r in summary] == [(m, "0") for m in automatic] + [
        (m, str(r)) for m in interactive for r in (1, 2, 3)
    ]
    cases = list(csv.DictReader(open(out / "interactive_evaluation_cases.csv")))
    assert len({r["case"] for r in cases}) == 2  # the test fold of the tiny data set
    max_clicks = json.loads((staged.root / "configs" / "train.json").read_text())["max_clicks"]
    for case in {r["case"] for r in cases}:
        first = {r["method"]: r["clicks"] for r in cases if r["case"] == case and r["round"] == "1"}
        assert len(set(first.values())) == 1  # the same start and seed: the same first round for every method
        for m in interactive:
            rounds = [r for r in cases if r["case"] == case and r["method"] == m]
            assert [int(r["clicks_total"]) for r in rounds] == list(np.cumsum([int(r["clicks"]) for r in rounds]))
            assert all(0 <= int(r["clicks"]) <= max_clicks for r in rounds)
    assert sum(int(r["clicks"]) for r in cases) > 0
    for r in cases:
        assert 0.0 <= float(r["dice"]) <= 1.0 and (r["assd_mm"] == "nan" or float(r["assd_mm"]) >= 0.0)
    md = (out / "interactive_evaluation.md").read_text()
    assert "| R-Net + CRF-Net(fu) | 3 |" in md and "### P-Net + CRF-Net(f) vs P-Net alone" in md
    assert "### R-Net + CRF-Net(fu) vs the no-network baseline" in md
    assert "### Geodesic vs Euclidean maps (R-Net alone, the ablation)" in md
    differences = list(csv.DictReader(open(out / "interactive_evaluation_differences.csv")))
    floor = [d for d in differences if d["b"] == "Balls at the clicks, no network" and d["metric"] == "dice"]
    assert [d["round_a"] for d in floor] == ["1", "2", "3"] and all(int(d["n"]) == 2 for d in floor)
    assert "ball_radius" in md and "(chosen from 1, 2, 3, 5, 7 by the mean Dice after round 3" in md
    assert (out / "dice_vs_clicks.png").stat().st_size > 1000


def test_r_net_resume_with_other_click_settings_is_refused(staged, tmp_path):
    """The training clicks (rounds, stand-in radius, slice choice, draws per case) are in R-Net's resume fingerprint."""
    root = shutil.copytree(staged.root, tmp_path / BUNDLE)
    tiny = tmp_path / "tiny.json"
    tiny.write_text(json.dumps(SPECS[BUNDLE].tiny))
    configs = [root / "configs" / c for c in STAGES["rnet.pt"]] + [tiny]
    cmd = bundle_command(root, configs, "--dataset_dir", str(staged.data), "--rounds", "2", run_id="training")
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=REPO)
    assert r.returncode != 0 and "checkpoint_last_rnet.pt: made with other settings" in r.stderr, r.stderr[-3000:]
    assert "'rounds': 5" in r.stderr and "'rounds': 2" in r.stderr


def test_inference_writes_nifti_on_the_input_grid(staged):
    """P-Net + CRF-Net(f) on the validation folder (P-Net alone: the 2D test)."""
    out = staged.tmp / "infer"
    folder = staged.data.parent / VALIDATION_FOLDERS[2020]  # cases without segmentation
    run_bundle(
        staged.root,
        ["inference.json"],
        staged.tmp,
        "--dataset_dir",
        str(folder),
        "--output_dir",
        str(out),
    )
    inputs = sorted(folder.glob("*/*_flair.nii.gz"))
    assert len(inputs) == 2
    for src in inputs:
        pred, img = nib.load(out / src.name.replace(".nii.gz", "_seg.nii.gz")), nib.load(src)
        assert pred.shape == img.shape and pred.get_data_dtype() == np.uint8
        np.testing.assert_allclose(pred.affine, img.affine, atol=1e-5)
        values = np.asarray(pred.dataobj)
        assert set(np.unique(values)) <= {0, 1}
        brain = np.argwhere(np.asarray(img.dataobj) > 0)
        outside = np.ones(img.shape, bool)
        outside[tuple(slice(a, b + 1) for a, b in zip(brain.min(0), brain.max(0)))] = False
        assert not values[outside].any()  # the networks saw the brain crop; outside it is background


def test_refine_entry_refines_a_label_on_the_input_grid(staged):
    """What a MONAI Label infer task calls: image + current label + clicks -> new label, on the file's grid."""
    parser = parser_of(staged, ["inference.json"])
    refine = parser.get_parsed_content("refine")
    case = sorted(p for p in staged.data.iterdir() if p.is_dir())[0]
    image = LoadImage(image_only=True, ensure_channel_first=True)(str(case / f"{case.name}_flair.nii.gz"))
    truth = np.asarray(nib.load(case / f"{case.name}_seg.nii.gz").dataobj) > 0
    current = np.zeros(truth.shape, np.uint8)
    fg = np.argwhere(truth)[:2].tolist()
    bg = np.argwhere((np.asarray(image[0]) > 0) & ~truth)[:2].tolist()
    new = refine(image=image, label=torch.from_numpy(current), foreground=fg, background=bg)
    assert new.shape == truth.shape and new.dtype == torch.uint8
    assert all(new[tuple(p)] == 1 for p in fg) and all(new[tuple(p)] == 0 for p in bg)  # CRF-Net(fu) clamps clicks
    fast, eager = parser.get_parsed_content("refine_backbone"), parser.get_parsed_content("refine_network").backbone
    assert fast is not eager  # the call runs the inference copy (batch norm folded), with the eager network's outputs
    x = torch.randn(1, 4, 17, 19, 15, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(fast(x), eager(x), atol=1e-4, rtol=1e-4)


def test_torchscript_export_of_r_net_with_crf_net_fu(staged, tmp_path):
    """R-Net + CRF-Net(fu) exports whole (P-Net is exported by the shared bundle test), with and without clicks."""
    net_id, weights = "rnet_crf_def", "rnet_crf.pt"
    configs = [str(staged.root / "configs" / "inference.json"), str(staged.tmp / "tiny.json")]
    ts = tmp_path / "net.ts"
    cmd = [
        sys.executable,
        "-m",
        "monai.bundle",
        "ckpt_export",
        net_id,
        "--filepath",
        str(ts),
        "--ckpt_file",
        str(staged.root / "models" / weights),
        "--config_file",
        str(configs),
        "--meta_file",
        str(staged.root / "configs" / "metadata.json"),
        "--bundle_root",
        str(staged.root),
    ]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=REPO)
    assert r.returncode == 0, r.stderr[-3000:]
    parser = ConfigParser()
    parser.read_config(configs)
    net = parser.get_parsed_content(net_id)
    net.load_state_dict(torch.load(staged.root / "models" / weights, map_location="cpu", weights_only=True))
    net.eval()
    scripted = torch.jit.load(str(ts), map_location="cpu").eval()
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(1, 4, 17, 19, 15, generator=gen)
    seeds = torch.zeros(1, 2, 17, 19, 15)
    seeds[0, 1, 8, 9, 7] = 1
    with torch.no_grad():
        torch.testing.assert_close(scripted(x), net(x), atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(scripted(x, seeds), net(x, seeds), atol=1e-5, rtol=1e-4)


@pytest.mark.slow
def test_2d_variant_trains_per_slice_and_infers(bundle_data, tmp_path):
    """One override file (2d.json) gives per-slice 2D P-Net / R-Net; training and inference run unchanged."""
    root = fresh_copy(BUNDLE, tmp_path)
    data = bundle_data(BUNDLE)
    small = [
        "--features",
        "[4, 4, 4, 4, 4]",
        "--compress",
        "2",
        "--head_channels",
        "4",
        "--epochs",
        "1",
        "--patch_size",
        "[16, 16, 2]",
    ]
    run_bundle(root, ["train.json", "2d.json"], tmp_path, "--dataset_dir", str(data), *small, run_id="training")
    state = torch.load(root / "models" / "model.pt", map_location="cpu", weights_only=True)
    assert all(k.startswith("net.") for k in state) and state["net.blocks.0.0.conv.weight"].ndim == 4  # 2D kernels
    assert json.loads((root / "models" / "model.json").read_text())["settings"]["spatial_dims"] == 2
    out = tmp_path / "infer"
    run_bundle(
        root,
        ["inference.json", "2d.json"],
        tmp_path,
        "--dataset_dir",
        str(data.parent / VALIDATION_FOLDERS[2020]),
        "--output_dir",
        str(out),
        "--use_crf",
        "False",
        *small[:6],
    )
    assert len(list(out.glob("*_seg.nii.gz"))) == 2


def test_missing_data_and_missing_earlier_stage_say_what_to_do(bundle_data, tmp_path):
    root = fresh_copy(BUNDLE, tmp_path)
    configs = [root / "configs" / "train.json"]
    cmd = bundle_command(root, configs, "--dataset_dir", str(tmp_path / "nowhere"), run_id="training")
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=REPO)
    assert r.returncode != 0 and "nowhere: expected a folder of BraTS case folders" in r.stderr
    assert "python -m common.synthetic.brats" in r.stderr
    configs = [root / "configs" / "train.json", root / "configs" / "train_pnet_crf.json"]
    cmd = bundle_command(root, configs, "--dataset_dir", str(bundle_data(BUNDLE)), run_id="training")
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=REPO)
    assert r.returncode != 0 and "model.pt: expected trained weights" in r.stderr


@pytest.fixture(scope="module")
def brats21_copy(tmp_path_factory):
    """A BraTS 2021-layout copy of the bundle's synthetic data set (its shape and case count), written once."""
    out = tmp_path_factory.mktemp("brats21")
    write_synthetic_brats(out, n_cases=10, shape=(32, 32, 24), n_validation=0, seed=0, release=2021)
    return out / TRAINING_FOLDERS[2021]


def _damaged(copy, tmp_path, damage) -> tuple:
    """A copy of ``copy`` with ``damage(case_folder)`` applied to its first training case (not a held-out one: every
    fold's files are read); returns (data, damaged file)."""
    data = shutil.copytree(copy, tmp_path / copy.name)
    folds = fold_of(sorted(p.name for p in data.iterdir() if p.is_dir()), 5, 0)
    case = next(c for c, k in sorted(folds.items()) if k not in (0, 1))  # train.json: test fold 0, validation 1
    return data, damage(data / case)


def _truncate_flair(case):
    return truncate(case / f"{case.name}_flair.nii.gz")


def _label_3(case):
    path = case / f"{case.name}_seg.nii.gz"
    img = nib.load(path)
    seg = np.asarray(img.dataobj).copy()
    seg[seg == 1] = 3  # the Decathlon / BraTS 2023 convention mixed in
    nib.save(nib.Nifti1Image(seg, img.affine), path)
    return path


@pytest.mark.parametrize(
    "damage, expected",
    [(_truncate_flair, "expected a readable NIfTI volume"), (_label_3, "expected label values 0, 1, 2, 4")],
    ids=["truncated_flair", "label_3"],
)
def test_damaged_copy_is_refused_cleanly_naming_the_file(brats21_copy, tmp_path, damage, expected):
    """A truncated image and a foreign label value: exit code 1 (not an abort in the caching threads), the file named
    with what was expected and found, and no weights written."""
    data, path = _damaged(brats21_copy, tmp_path, damage)
    root = fresh_copy(BUNDLE, tmp_path)
    r = run_bundle(
        root, ["train.json"], tmp_path, "--dataset_dir", str(data), run_id="training", timeout=300, check=False
    )
    assert r.returncode == 1, f"exit code {r.returncode}:\n{r.stderr[-3000:]}"
    assert f"{path}: {expected}" in r.stderr, r.stderr[-3000:]
    assert "found" in r.stderr.split(f"{path}: {expected}")[1].splitlines()[0]
    assert not (root / "models").exists()


def _without_seconds(path) -> list[dict]:
    """A report CSV's rows without the timing columns (the seconds per step differ between any two runs)."""
    return [{k: v for k, v in row.items() if not k.startswith("seconds")} for row in csv.DictReader(open(path))]


def test_evaluation_under_torchrun_deals_the_cases_and_writes_what_one_process_writes(staged, tmp_path, monkeypatch):
    """multi_gpu_evaluate.json merged on evaluate.json, 2 gloo processes: each rank evaluates one of the 2 test cases
    (and one of the 2 validation cases the ball radius is chosen on); rank 0 writes the tables, per-case rows, paired
    differences and figure one process writes from the same weights and data."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # one thread per process in both runs (torchrun_bundle's setting)
    args = ("--dataset_dir", str(staged.data), "--rounds", "3")
    one, two = tmp_path / "one", tmp_path / "two"
    run_bundle(staged.root, ["train.json", "evaluate.json"], tmp_path, *args, "--output_dir", str(one))
    configs = [staged.root / "configs" / c for c in ("train.json", "evaluate.json", "multi_gpu_evaluate.json")]
    logs = torchrun_bundle(staged.root, [*configs, tmp_path / "tiny.json"], tmp_path, *args, "--output_dir", str(two))

    cases = _without_seconds(one / "interactive_evaluation_cases.csv")
    assert _without_seconds(two / "interactive_evaluation_cases.csv") == cases
    assert _without_seconds(two / "interactive_evaluation.csv") == _without_seconds(one / "interactive_evaluation.csv")
    for name in ("interactive_evaluation_differences.csv", "dice_vs_clicks.png"):
        assert (two / name).read_bytes() == (one / name).read_bytes(), name
    seconds = re.compile(r"\| [0-9.]+ \|$", re.MULTILINE)  # the last column of the table: seconds per step
    md = [seconds.sub("| s |", (out / "interactive_evaluation.md").read_text()) for out in (one, two)]
    assert md[0] == md[1] and "(chosen from 1, 2, 3, 5, 7 by the mean Dice after round 3" in md[0]
    # the cases were dealt: each rank evaluated (and logged) one test case; only rank 0 wrote the reports
    evaluated = [{c["case"] for c in cases if f"{c['case']}: P-Net Dice" in logs[rank]} for rank in (0, 1)]
    assert sorted(len(e) for e in evaluated) == [1, 1] and evaluated[0] != evaluated[1], logs[1][-3000:]
    assert "interactive evaluation done" in logs[0] and "interactive evaluation done" not in logs[1]
