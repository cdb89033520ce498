"""Per-bundle test settings: how to write its synthetic data set and the overrides that make a run tiny.

A new bundle adds one entry to ``SPECS``; every test in this folder then runs on it. The session fixtures that
write the data and train each bundle once (``bundle_data``, ``trained_bundle``) are in ``tests/conftest.py``, shared
with the app tests.
"""

from __future__ import annotations

import io
import json
import logging
import os
import runpy
import shutil
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from unittest import mock

from common.synthetic.acdc import write_synthetic_acdc
from common.synthetic.atlas import write_synthetic_atlas
from common.synthetic.brats import TRAINING_FOLDERS, write_synthetic_brats
from common.synthetic.lgg import write_synthetic_lgg
from common.synthetic.spine import write_synthetic_spine

REPO = Path(__file__).resolve().parents[2]
BUNDLES = sorted(p.name for p in (REPO / "bundles").iterdir() if (p / "configs" / "metadata.json").is_file())


@dataclass(frozen=True)
class BundleSpec:
    write_data: Callable[[Path], Path]
    tiny: dict  # overrides merged on every config of the bundle in tests
    input_shape: Sequence[int]  # (B, C, *S) for the TorchScript and ONNX export checks
    train_configs: Sequence[str] = ("train.json",)
    # the two-process run (test_multi_gpu): data with a validation item per rank (None: write_data), and overrides
    # on top of tiny that make its validation metric non-zero after one epoch (so the all-gather check has teeth)
    multi_gpu_data: Callable[[Path], Path] | None = None
    multi_gpu_tiny: dict = field(default_factory=dict)


SPECS = {
    "igs_acdc": BundleSpec(
        write_data=lambda out: write_synthetic_acdc(out, n_training=5, n_testing=2, seed=0),
        tiny={
            "image_size": 32,
            "unet_features": [4, 4, 8, 8, 16, 4],
            "epochs": 2,
            "batch_size": 8,
            "num_workers": 0,
            "fine_tune_epochs": 1,
            "igs_lines_per_iteration": 1,
            "igs_max_swaps": 4,
            "loupe_epochs": 2,
            "pattern": "center",
        },
        input_shape=(2, 1, 32, 32),
    ),
    "igs_brats": BundleSpec(
        # 10 cases in 5 folds: 2 test, 2 validation (one per rank in the two-process run), 6 training; 32x32 slices
        write_data=lambda out: write_synthetic_brats(out, n_cases=10, shape=(32, 32, 24), n_validation=2, seed=0)
        / TRAINING_FOLDERS[2020],
        tiny={
            "unet_features": [4, 4, 8, 8, 16, 4],
            "epochs": 2,
            "batch_size": 8,
            "num_workers": 0,
            "slices_per_case": 4,
            "fine_tune_epochs": 1,
            "igs_lookahead": 2,
            "igs_max_swaps": 2,
            "loupe_epochs": 2,
            "pattern": "center",
        },
        input_shape=(2, 4, 32, 32),
    ),
    "unet_lgg": BundleSpec(
        write_data=lambda out: write_synthetic_lgg(out, n_patients=6, seed=0, slices=(4, 6)),  # real 256x256x3
        tiny={"features": 8, "depth": 3, "epochs": 2, "batch_size": 8, "num_workers": 0},
        input_shape=(2, 3, 64, 64),
        multi_gpu_data=lambda out: write_synthetic_lgg(out, n_patients=10, seed=0, slices=(4, 6)),  # 2 val patients
        multi_gpu_tiny={"learning_rate": 0.01},
    ),
    "deepigeos_brats": BundleSpec(
        # 10 cases in 5 folds: 2 test, 2 validation (one per rank in the two-process run), 6 training
        write_data=lambda out: write_synthetic_brats(out, n_cases=10, shape=(32, 32, 24), n_validation=2, seed=0)
        / TRAINING_FOLDERS[2020],
        tiny={
            "features": [4, 4, 4, 4, 4],
            "compress": 2,
            "head_channels": 4,
            "patch_size": [16, 16, 16],
            "rnet_patch_size": [24, 24, 24],
            "crf_iterations": 2,
            "epochs": 2,
            "val_interval": 1,
            "batch_size": 2,
            "num_workers": 0,
            "click_min_size": 4,
            "voxels_per_click": 20,
            "refine_margin": 4,
        },
        input_shape=(1, 1, 19, 22, 17),
    ),
    "iterative_fcn_spine": BundleSpec(
        # CSI layout, 5 training cases (fold 0 validates) + 2 test cases, 24x24x40 voxels, vertebrae at 0.6 scale
        write_data=lambda out: write_synthetic_spine(out, n_training=5, n_testing=2, shape=(24, 24, 40), scale=0.6),
        tiny={
            "features": 4,
            "patch_size": [16, 16, 16],
            "epochs": 2,
            "batch_size": 2,
            "num_workers": 0,
            "samples_per_case": 2,
            "min_voxels": 20,
            "max_steps": 300,
        },
        input_shape=(2, 2, 16, 16, 16),
        # 10 training cases: 2 in the validation fold, one per rank
        multi_gpu_data=lambda out: write_synthetic_spine(
            out, n_training=10, n_testing=1, shape=(24, 24, 40), scale=0.6
        ),
    ),
    "resunet_zoom_atlas": BundleSpec(
        # 10 subjects at 8 mm (25x29x24) in 5 folds: 2 test, 2 validation (one per rank in the two-process run),
        # 6 training; 2 Testing subjects (T1w only) for inference
        write_data=lambda out: write_synthetic_atlas(out, n_subjects=10, n_testing=2, voxel_size=8, seed=0),
        tiny={
            "features": [8, 8, 16, 16],
            "patch_size": [16, 16, 16],
            "epochs": 2,
            "val_interval": 1,
            "num_workers": 0,
            "cache_rate": 1.0,
        },
        input_shape=(1, 1, 16, 24, 16),
    ),
}


def bundle_command(bundle_root: Path, config_files: Sequence[str | Path], *args: str, run_id: str = "run") -> list[str]:
    """The command line a user types: ``python -m monai.bundle run <run_id> --config_file [...] --bundle_root ...``."""
    files = str([str(f) for f in config_files])
    return [
        sys.executable,
        "-m",
        "monai.bundle",
        "run",
        run_id,
        "--config_file",
        files,
        "--bundle_root",
        str(bundle_root),
        *args,
    ]


def monai_bundle(*args: str) -> str:
    """``python -m monai.bundle <args>`` as a user types it, run in this process: the same argument parsing (fire)
    and code as the command line, without an interpreter start per command. An error is raised here as it would end
    the command.

    Returns:
        what ``monai.bundle``'s scripts logged (e.g. "data shape of network is verified with no error.").
    """
    log = io.StringIO()
    handler = logging.StreamHandler(log)
    logger = logging.getLogger("monai.bundle.scripts")
    logger.addHandler(handler)
    try:
        with mock.patch.object(sys, "argv", ["python -m monai.bundle", *args]):
            runpy.run_module("monai.bundle", run_name="__main__", alter_sys=True)
    finally:
        logger.removeHandler(handler)
    return log.getvalue()


def fresh_copy(bundle: str, tmp: Path) -> Path:
    """A copy of ``bundles/<bundle>`` at ``tmp/<bundle>`` without its weights and evaluation (``models``, ``eval``):
    the bundle as a user clones it. Returns its root."""
    return shutil.copytree(REPO / "bundles" / bundle, tmp / bundle, ignore=shutil.ignore_patterns("models", "eval"))


def run_bundle(
    bundle_root: Path,
    configs: Sequence[str],
    tmp: Path,
    *args: str,
    run_id: str = "run",
    timeout: int = 900,
    check: bool = True,
) -> subprocess.CompletedProcess:
    """``python -m monai.bundle run <run_id>`` on the bundle's configs plus the tiny overrides, as a user runs it;
    with ``check`` (default) it must exit with 0, else the exit code is the caller's to check."""
    tiny = tmp / "tiny.json"
    tiny.write_text(json.dumps(SPECS[bundle_root.name].tiny))
    files = [bundle_root / "configs" / c for c in configs] + [tiny]
    meta = ["--meta_file", str(bundle_root / "configs" / "metadata.json")]
    cmd = bundle_command(bundle_root, files, *meta, *args, run_id=run_id)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=REPO, env=env)
    assert not check or r.returncode == 0, f"{' '.join(cmd)} failed:\n{r.stdout[-3000:]}\n{r.stderr[-5000:]}"
    return r


def torchrun_bundle(
    bundle_root: Path,
    config_files: Sequence[str | Path],
    tmp: Path,
    *args: str,
    run_id: str = "run",
    nproc: int = 2,
    timeout: int = 900,
) -> dict[int, str]:
    """``torchrun --standalone --nproc_per_node <nproc> -m monai.bundle run <run_id> --config_file [...]`` as a model card
    types it (2 gloo processes on CPU), one OpenMP thread per process; it must exit with 0 (every rank finished).

    Returns:
        each rank's output (``--redirects 3``: stdout and stderr of a rank in its own file under ``tmp/torchrun_logs``).
    """
    logs = tmp / "torchrun_logs"
    meta = ["--meta_file", str(bundle_root / "configs" / "metadata.json")]
    cmd = [
        *(sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc)),
        *("--log-dir", str(logs), "--redirects", "3"),
        *bundle_command(bundle_root, config_files, *meta, *args, run_id=run_id)[1:],
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=tmp, env=env)
    rank_logs = {
        rank: "".join(f.read_text() for f in sorted(logs.glob(f"*/attempt_0/{rank}/*.log"))) for rank in range(nproc)
    }
    tails = "\n".join(f"rank {rank}:\n{text[-3000:]}" for rank, text in rank_logs.items())
    assert r.returncode == 0, f"{' '.join(cmd)} failed:\n{r.stderr[-3000:]}\n{tails}"
    return rank_logs


def check_mlflow_run(db: Path, epochs: int, key: str | None = None) -> None:
    """The one training run recorded in the MLflow store ``db`` (sqlite): ``max_epochs`` among its parameters, the
    training loss and the key validation metric (``key``; None: the first ``val_*`` metric) per epoch, the executed
    config as a JSON artifact."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{db}")
    runs = client.search_runs([client.get_experiment_by_name("monai_experiment").experiment_id])
    assert len(runs) == 1
    run = runs[0]
    assert run.data.params["max_epochs"] == str(epochs)
    assert len(client.get_metric_history(run.info.run_id, "train_loss")) >= epochs
    key = key or next(k for k in run.data.metrics if k.startswith("val_"))
    assert len(client.get_metric_history(run.info.run_id, key)) == epochs
    artifacts = [a.path for a in client.list_artifacts(run.info.run_id)]
    assert any(
        a.endswith(".json") for a in artifacts
    ), f"expected the executed config as an artifact, found {artifacts}"


DEEPIGEOS_STAGES = {  # weights file -> the configs of its stage, each merged on the ones before it
    "pnet_crf.pt": ["train.json", "train_pnet_crf.json"],
    "rnet.pt": ["train.json", "train_rnet.json"],
    "rnet_euclidean.pt": ["train.json", "train_rnet.json", "euclidean.json"],
    "rnet_crf.pt": ["train.json", "train_rnet.json", "train_rnet_crf.json"],
}
"""The later DeepIGeoS training stages (P-Net is ``train.json``), trained in this order by ``deepigeos_staged``."""
