"""A MONAI Label server on the tiny trained bundles: the bundles' own fixtures train them (tests/bundles/conftest.py),
the DeepIGeoS refinement stages are trained on top, and ``monailabel start_server`` serves them on a free port."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from tests.bundles.conftest import REPO, SPECS, bundle_data, run_bundle, trained_bundle  # noqa: F401 (fixtures)

REFINE_STAGES = (["train.json", "train_pnet_crf.json"], ["train.json", "train_rnet.json"])
REFINE_STAGES += (["train.json", "train_rnet.json", "train_rnet_crf.json"],)


def _require_monailabel() -> str:
    """The ``monailabel`` command of this interpreter's environment; fails (not skips) when it is missing."""
    exe = Path(sys.executable).with_name("monailabel")
    if not exe.is_file():
        pytest.fail(f"MONAI Label is not installed in {sys.prefix} (expected {exe}): run bash scripts/install.sh")
    return str(exe)


@dataclass(frozen=True)
class Served:
    url: str
    bundles: Path  # the served bundle copies
    studies: Path
    images: dict[str, str]  # bundle -> the image id of its case in the datastore
    log: Path
    process: subprocess.Popen


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _write_studies(studies: Path, bundles: dict) -> dict[str, str]:
    """One case per bundle in the datastore folder (NIfTI), from the bundles' synthetic data."""
    from apps.monailabel.lib.lgg import write_lgg_studies

    studies.mkdir(parents=True)
    acdc = sorted((bundles["igs_acdc"].data / "testing").glob("*/*_frame[0-9][0-9].nii.gz"))[0]
    shutil.copy(acdc, studies / "acdc_case.nii.gz")
    flair = sorted(bundles["deepigeos_brats"].data.glob("*/*_flair.nii.gz"))[0]
    shutil.copy(flair, studies / "brats_case.nii.gz")
    lgg = write_lgg_studies(bundles["unet_lgg"].data, studies)[0]
    return {"igs_acdc": "acdc_case", "deepigeos_brats": "brats_case", "unet_lgg": lgg.name[: -len(".nii.gz")]}


def start_server(
    bundles: Path, studies: Path, extra: dict, log: Path, timeout: float = 240.0
) -> tuple[str, subprocess.Popen]:
    """``monailabel start_server`` on 127.0.0.1 and a free port, polled with ``GET /info/`` until it answers."""
    port = _free_port()
    cmd = [
        _require_monailabel(), "start_server", "--app", str(REPO / "apps" / "monailabel"), "--studies", str(studies),
        "--host", "127.0.0.1", "--port", str(port),
        "--conf", "bundles_dir", str(bundles), "--conf", "device", "cpu",
        "--conf", "extra_configs", json.dumps(extra, separators=(",", ":")),  # compact: the script splits on spaces
    ]  # fmt: skip
    env = {  # monailabel runs the `python` of PATH
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),
        "MONAI_LABEL_AUTO_UPDATE_SCORING": "false",
    }
    proc = subprocess.Popen(cmd, stdout=open(log, "w"), stderr=subprocess.STDOUT, env=env, cwd=REPO)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"monailabel exited with {proc.returncode}:\n{log.read_text()[-6000:]}")
        try:
            if requests.get(f"{url}/info/", timeout=5).status_code == 200:
                return url, proc
        except requests.ConnectionError:
            pass
        time.sleep(1)
    stop_server(proc)
    pytest.fail(f"monailabel did not answer GET /info/ within {timeout} s:\n{log.read_text()[-6000:]}")


def stop_server(proc: subprocess.Popen) -> None:
    """Stop the server by its PID (SIGTERM, then SIGKILL)."""
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.fixture(scope="session")
def served(trained_bundle, tmp_path_factory):  # noqa: F811 (the imported fixture)
    """The three tiny trained bundles (DeepIGeoS with its refinement stages) served by one MONAI Label server."""
    _require_monailabel()
    trained = {name: trained_bundle(name) for name in SPECS}
    deepigeos = trained["deepigeos_brats"]
    for configs in REFINE_STAGES:
        if not (deepigeos.root / "models" / f"{Path(configs[-1]).stem.replace('train_', '')}.pt").is_file():
            run_bundle(deepigeos.root, configs, deepigeos.tmp, "--dataset_dir", str(deepigeos.data), run_id="training")
    tmp = tmp_path_factory.mktemp("monailabel")
    bundles = tmp / "bundles"
    for name, tb in trained.items():
        shutil.copytree(tb.root, bundles / name, ignore=shutil.ignore_patterns("eval", "checkpoint_*", "*.db"))
    studies = tmp / "studies"
    images = _write_studies(studies, trained)
    extra = {name: [str(tb.tmp / "tiny.json")] for name, tb in trained.items()}
    log = tmp / "server.log"
    url, proc = start_server(bundles, studies, extra, log)
    yield Served(url, bundles, studies, images, log, proc)
    stop_server(proc)
