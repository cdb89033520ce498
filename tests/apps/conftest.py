"""A MONAI Label server on the tiny trained bundles: the shared fixtures train them (tests/conftest.py),
the DeepIGeoS refinement stages and igs_brats' classification and reconstruction networks are trained on top, and
``monailabel start_server`` serves them on a free port."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from apps.monailabel.lib.bundles import BUNDLES
from apps.monailabel.lib.server import monailabel_command, start_server, stop_server
from common.data import BRATS_MODALITIES, read_mhd
from tests.bundles.conftest import run_bundle


def _require_monailabel() -> None:
    """Fail (not skip) when MONAI Label is missing: CI installs it with scripts/install.sh."""
    try:
        monailabel_command()
    except FileNotFoundError as e:
        pytest.fail(str(e))


@dataclass(frozen=True)
class Served:
    url: str
    bundles: Path  # the served bundle copies
    studies: Path
    images: dict[str, str]  # bundle -> the image id of its case in the datastore
    extra: dict[str, list[str]]  # bundle -> the config files merged last (the tiny settings)
    log: Path
    process: subprocess.Popen


def _write_studies(studies: Path, bundles: dict) -> dict[str, str]:
    """One case per bundle in the datastore folder (NIfTI), from the bundles' synthetic data."""
    from apps.monailabel.lib.lgg import write_lgg_studies

    studies.mkdir(parents=True)
    acdc = min((bundles["igs_acdc"].data / "testing").glob("*/*_frame[0-9][0-9].nii.gz"))
    shutil.copy(acdc, studies / "acdc_case.nii.gz")
    flair = min(bundles["deepigeos_brats"].data.glob("*/*_flair.nii.gz"))
    shutil.copy(flair, studies / "brats_case.nii.gz")
    lgg = write_lgg_studies(bundles["unet_lgg"].data, studies)[0]
    case = min(p for p in bundles["igs_brats"].data.iterdir() if p.is_dir())  # 4 modalities as one 4D NIfTI
    first = nib.load(case / f"{case.name}_flair.nii.gz")
    stack = np.stack([np.asarray(nib.load(case / f"{case.name}_{m}.nii.gz").dataobj) for m in BRATS_MODALITIES], -1)
    nib.save(nib.Nifti1Image(stack.astype(np.float32), first.affine), studies / "brats4_case.nii.gz")
    spine = min((bundles["iterative_fcn_spine"].data / "test" / "img").glob("*.mhd"))  # CSI .mhd -> NIfTI
    ct, affine = read_mhd(spine)
    nib.save(nib.Nifti1Image(ct, affine), studies / "spine_case.nii.gz")
    t1w = min((bundles["resunet_zoom_atlas"].data / "Testing").glob("*/*/*/anat/*_T1w.nii.gz"))
    shutil.copy(t1w, studies / "atlas_case.nii.gz")
    return {
        "iterative_fcn_spine": "spine_case",
        "igs_acdc": "acdc_case",
        "deepigeos_brats": "brats_case",
        "unet_lgg": lgg.name[: -len(".nii.gz")],
        "igs_brats": "brats4_case",
        "resunet_zoom_atlas": "atlas_case",
    }


@pytest.fixture(scope="session")
def served(trained_bundle, deepigeos_staged, tmp_path_factory):
    """The tiny trained bundles (DeepIGeoS with its refinement stages) served by one MONAI Label server."""
    _require_monailabel()
    trained = {name: trained_bundle(name) for name in BUNDLES if name != "deepigeos_brats"}  # the served ones
    trained["deepigeos_brats"] = deepigeos_staged  # with its refinement stages
    tmp = tmp_path_factory.mktemp("monailabel")
    bundles = tmp / "bundles"
    for name, tb in trained.items():
        shutil.copytree(tb.root, bundles / name, ignore=shutil.ignore_patterns("eval", "checkpoint_*", "*.db"))
    for task in ("classification", "reconstruction"):  # igs_brats' further infer tasks, one tiny epoch each
        args = ("--dataset_dir", str(trained["igs_brats"].data), "--epochs", "1")
        (tmp / task).mkdir()
        run_bundle(bundles / "igs_brats", ["train.json", f"{task}.json"], tmp / task, *args, run_id="training")
    studies = tmp / "studies"
    images = _write_studies(studies, trained)
    extra = {name: [str(tb.tmp / "tiny.json")] for name, tb in trained.items()}
    log = tmp / "server.log"
    try:
        url, proc = start_server(studies, {"bundles_dir": str(bundles), "device": "cpu", "extra_configs": extra}, log)
    except RuntimeError as e:
        pytest.fail(str(e))
    yield Served(url, bundles, studies, images, extra, log, proc)
    stop_server(proc)
