"""Checks every bundle under bundles/ must pass: metadata, config properties, network in/out (the zoo's checks as a
user types them), TorchScript and ONNX export, MLflow tracking, resumable training; and the IGS bundles' one default
forward model. Bundle-specific settings live in conftest.SPECS."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time

import onnxruntime
import pytest
import torch
from monai.bundle import ConfigParser, ConfigWorkflow

from tests.bundles.conftest import BUNDLES, REPO, SPECS, bundle_command, check_mlflow_run, monai_bundle, run_bundle


def test_every_bundle_has_test_settings():
    assert BUNDLES and set(BUNDLES) <= set(SPECS), f"add test settings for {set(BUNDLES) - set(SPECS)} to SPECS"


@pytest.mark.parametrize("bundle", BUNDLES)
def test_layout_and_metadata(bundle, tmp_path):
    root = REPO / "bundles" / bundle
    for f in (
        "configs/metadata.json",
        "configs/train.json",
        "configs/inference.json",
        "configs/logging.conf",
        "LICENSE",
        "docs/README.md",
    ):
        assert (root / f).is_file(), f"{root / f}: expected (Model Zoo layout), found no file"
    schema = tmp_path / "schema.json"  # where the schema was downloaded to (a file there is read, not downloaded)
    shutil.copy(REPO / "tests" / "bundles" / "meta_schema.json", schema)
    log = monai_bundle(
        "verify_metadata", "--meta_file", str(root / "configs" / "metadata.json"), "--filepath", str(schema)
    )
    assert "metadata is verified with no error" in log
    meta = json.loads((root / "configs" / "metadata.json").read_text())
    assert meta["version"] in meta["changelog"]
    assert "note" not in meta["eval_metrics"], "eval_metrics must hold measured figures"


@pytest.mark.parametrize("bundle", BUNDLES)
@pytest.mark.parametrize("workflow", ["train", "inference"])
def test_config_properties(bundle, workflow, tmp_path, bundle_data):
    root = shutil.copytree(
        REPO / "bundles" / bundle, tmp_path / bundle, ignore=shutil.ignore_patterns("models", "eval")
    )
    config = root / "configs" / ("train.json" if workflow == "train" else "inference.json")
    wf = ConfigWorkflow(
        config_file=str(config),
        meta_file=str(root / "configs" / "metadata.json"),
        logging_file=str(root / "configs" / "logging.conf"),
        workflow_type=workflow,
        bundle_root=str(root),
        dataset_dir=str(bundle_data(bundle)),
        **SPECS[bundle].tiny,
    )
    wf.initialize()
    missing = wf.check_properties()
    assert not missing, f"{config}: missing required properties {missing}"
    if workflow == "train":
        assert "training" in wf.parser and "run" in wf.parser  # both `run training` and `run` work


def parsed(bundle: str, configs: list[str], id: str, **overrides):
    """The parsed content of ``id`` in the bundle's ``configs`` merged in order, with ``overrides``."""
    parser = ConfigParser()
    parser.read_config([str(REPO / "bundles" / bundle / "configs" / c) for c in configs])
    parser.update(overrides)
    return parser.get_parsed_content(id)


@pytest.mark.parametrize("bundle", ["igs_acdc", "igs_brats"])
def test_igs_steps_default_to_the_bundle_forward_model(bundle):
    """``forward_model`` of ``train.json`` (and of the standalone ``inference.json``, the same value) is what the
    search, LOUPE, the comparison (first, or only) and inference use by default, so that a plain run of each step reads the
    patterns the one before wrote; each step's own setting still overrides it."""
    fm = parsed(bundle, ["train.json"], "forward_model")
    other = {"phase": "magnitude", "magnitude": "phase"}[fm]
    assert parsed(bundle, ["inference.json"], "forward_model") == fm
    for step, setting in (("igs_search.json", "igs"), ("loupe.json", "loupe")):
        assert parsed(bundle, ["train.json", step], f"{setting}#forward_model") == fm
        override = {f"{setting}_forward_model": other}
        assert parsed(bundle, ["train.json", step], f"{setting}#forward_model", **override) == other
    # igs_acdc compares under its default model only (the card's script adds the other: the comparison's cost);
    # igs_brats under both, its default first
    both = bundle == "igs_brats"
    assert parsed(bundle, ["train.json", "evaluate.json"], "forward_models") == [fm, other][: 1 + both]
    assert (
        parsed(bundle, ["train.json", "evaluate.json"], "forward_models", forward_model=other)
        == [other, fm][: 1 + both]
    )
    tasks = [[]] if bundle == "igs_acdc" else [[], ["classification_inference.json"], ["reconstruction_inference.json"]]
    for task in tasks:
        for model in (fm, other):
            transforms = parsed(bundle, ["inference.json", *task], "preprocessing", forward_model=model).transforms
            op = next(t for t in transforms if type(t).__name__ == "KSpaceUndersampled").op
            assert op.forward_model == op.mask_factory.forward_model == model  # simulates what its pattern is for
            assert op.mask_factory.pattern_file.name.endswith(f"_{model}_x8.npy")


@pytest.mark.parametrize("bundle", BUNDLES)
def test_verify_net_in_out(bundle):
    """The zoo's check with no extra argument: the default network on the smallest input its metadata admits."""
    configs = REPO / "bundles" / bundle / "configs"
    meta, config = str(configs / "metadata.json"), str(configs / "inference.json")
    log = monai_bundle("verify_net_in_out", "network_def", "--meta_file", meta, "--config_file", config)
    assert "data shape of network is verified with no error" in log


@pytest.mark.parametrize("bundle", BUNDLES)
def test_torchscript_export_matches_eager(bundle, trained_bundle, tmp_path):
    tb = trained_bundle(bundle)
    tiny = tb.tmp / "tiny.json"
    ts = tmp_path / "model.ts"
    configs = [str(tb.root / "configs" / "inference.json"), str(tiny)]
    cmd = [
        sys.executable,
        "-m",
        "monai.bundle",
        "ckpt_export",
        "network_def",
        "--filepath",
        str(ts),
        "--ckpt_file",
        str(tb.root / "models" / "model.pt"),
        "--meta_file",
        str(tb.root / "configs" / "metadata.json"),
        "--config_file",
        str(configs),
    ]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=REPO)
    assert r.returncode == 0, r.stderr[-3000:]
    parser = ConfigParser()
    parser.read_config(configs)
    parser["bundle_root"] = str(tb.root)
    net = parser.get_parsed_content("network_def")
    net.load_state_dict(torch.load(tb.root / "models" / "model.pt", map_location="cpu", weights_only=True))
    net.eval()
    scripted = torch.jit.load(str(ts), map_location="cpu").eval()
    x = torch.randn(*SPECS[bundle].input_shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(scripted(x), net(x), atol=1e-5, rtol=1e-4)


ONNX_NETWORKS = [  # (bundle, task configs merged after inference.json, network id, input shape (None: SPECS'))
    *((bundle, (), "network_def", None) for bundle in BUNDLES),
    ("igs_brats", ("classification_inference.json",), "network_def", None),
    ("igs_brats", ("reconstruction_inference.json",), "network_def", None),
    ("deepigeos_brats", (), "rnet_def", (1, 4, 19, 22, 17)),  # image, P-Net label, two geodesic maps
    ("deepigeos_brats", (), "pnet_crf_def", None),  # P-Net + CRF-Net(f): the CRF's Pairwise-Net as its MLP
]
"""Every network a bundle deploys. DeepIGeoS' CRF-Net exports with its Pairwise-Net as the MLP (eager inference
evaluates it as the equal piecewise-linear function, whose breakpoint count depends on the weights: not a graph)."""


def onnx_converter_kwargs(ndim: int) -> dict:
    """``--converter_kwargs`` of the cards' ``onnx_export`` commands for a ``(B, C, *S)`` input of ``ndim`` axes: the
    input named ``image`` (batch and spatial axes dynamic), the output ``pred``."""
    axes = {0: "batch", **{axis: "HWD"[axis - 2] for axis in range(2, ndim)}}
    return {"input_names": ["image"], "output_names": ["pred"], "dynamic_axes": {"image": axes}}


@pytest.mark.parametrize(
    "bundle, task, net_id, shape",
    ONNX_NETWORKS,
    ids=[f"{b}-{'+'.join(t) or n}" for b, t, n, _ in ONNX_NETWORKS],
)
def test_onnx_export_matches_eager(bundle, task, net_id, shape, trained_bundle, tmp_path, record_property):
    """``python -m monai.bundle onnx_export`` as the cards type it; ONNX Runtime on the graph gives eager PyTorch's
    output at the export shape and at another batch size with doubled spatial sizes (the axes are dynamic). The
    bundle's own network carries its trained weights; the task networks and R-Net their seeded initial ones (the
    export does not depend on the values). The largest difference is recorded as ``max_abs_difference``."""
    tb = trained_bundle(bundle)
    shape = shape or SPECS[bundle].input_shape
    configs = [str(tb.root / "configs" / c) for c in ("inference.json", *task)] + [str(tb.tmp / "tiny.json")]
    parser = ConfigParser()
    parser.read_config(configs)
    torch.manual_seed(0)
    net = parser.get_parsed_content(net_id)
    weights = tb.root / "models" / "model.pt"
    if task or net_id != "network_def":
        weights = tmp_path / "seeded.pt"
        torch.save(net.state_dict(), weights)
    net.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    net.eval()
    onnx_file = tmp_path / "model.onnx"
    monai_bundle(
        *("onnx_export", net_id, "--filepath", str(onnx_file), "--ckpt_file", str(weights)),
        *("--meta_file", str(tb.root / "configs" / "metadata.json"), "--config_file", str(configs)),
        *("--input_shape", str(list(shape)), "--converter_kwargs", str(onnx_converter_kwargs(len(shape)))),
    )
    session = onnxruntime.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    gen = torch.Generator().manual_seed(0)
    difference = 0.0
    for size in (shape, (shape[0] + 1, shape[1], *(2 * s for s in shape[2:]))):
        x = torch.randn(*size, generator=gen)
        with torch.no_grad():
            expected = net(x)
        found = torch.from_numpy(session.run(["pred"], {"image": x.numpy()})[0])
        torch.testing.assert_close(found, expected, atol=1e-5, rtol=1e-4)
        difference = max(difference, (found - expected).abs().max().item())
    record_property("max_abs_difference", difference)


@pytest.mark.parametrize("bundle", BUNDLES)
def test_mlflow_run_recorded(bundle, trained_bundle):
    tb = trained_bundle(bundle)
    output_dir = ConfigParser.load_config_file(tb.root / "configs" / "train.json").get("output_dir")
    assert output_dir == "$@bundle_root + '/eval'"
    check_mlflow_run(tb.root / "eval" / "mlruns.db", SPECS[bundle].tiny["epochs"])


@pytest.mark.slow
@pytest.mark.parametrize("bundle", BUNDLES)
def test_training_resumes_after_kill(bundle, bundle_data, tmp_path):
    root = shutil.copytree(
        REPO / "bundles" / bundle, tmp_path / bundle, ignore=shutil.ignore_patterns("models", "eval")
    )
    tiny = tmp_path / "tiny.json"
    tiny.write_text(json.dumps({**SPECS[bundle].tiny, "epochs": 4}))
    files = [root / "configs" / c for c in SPECS[bundle].train_configs] + [tiny]
    cmd = bundle_command(root, files, "--dataset_dir", str(bundle_data(bundle)), run_id="training")
    last = root / "models" / "checkpoint_last.pt"
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 600
    while not last.is_file() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)  # mid-run, after the first saved epoch
    proc.wait()
    saved = torch.load(last, map_location="cpu", weights_only=False)["engine"]  # never half-written
    done = saved["iteration"] // saved["epoch_length"]
    assert 1 <= done <= 4
    r = run_bundle(
        root,
        SPECS[bundle].train_configs,
        tmp_path,
        "--dataset_dir",
        str(bundle_data(bundle)),
        "--epochs",
        "4",
        run_id="training",
    )
    if done < 4:
        assert f"resumed from {last} at epoch {done}" in r.stdout + r.stderr
    final = torch.load(last, map_location="cpu", weights_only=False)["engine"]
    assert final["iteration"] == 4 * final["epoch_length"]
    # state made with other settings is refused, naming them, and left as it was
    cmd = bundle_command(
        root,
        files,
        "--dataset_dir",
        str(bundle_data(bundle)),
        "--epochs",
        "5",
        "--learning_rate",
        "0.123",
        run_id="training",
    )
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=REPO)
    assert r.returncode != 0 and f"{last}: made with other settings (learning_rate: expected 0.123, found" in r.stderr
    assert torch.load(last, map_location="cpu", weights_only=False)["engine"] == final
