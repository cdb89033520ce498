"""iterative_fcn_spine through `python -m monai.bundle`: damaged data are refused before training (exit code 1, the
file named, nothing in models/), and an evaluation without a test/ folder is refused."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from common.data import read_mhd, read_mhd_header, write_mhd
from tests.bundles.conftest import REPO, SPECS, bundle_command

BUNDLE = "iterative_fcn_spine"


def spacing_of(path: Path) -> list[float]:
    return [float(v) for v in read_mhd_header(path)["ElementSpacing"].split()]


def short_label(image: Path, label: Path) -> Path:
    array, _ = read_mhd(label)
    write_mhd(label, array[:, :, :-10], spacing_of(label))
    return label


def coarse_label_spacing(image: Path, label: Path) -> Path:
    array, _ = read_mhd(label)
    spacing = spacing_of(label)
    write_mhd(label, array, [*spacing[:2], 1.5 * spacing[2]])
    return label


def nan_image(image: Path, label: Path) -> Path:
    array, _ = read_mhd(image)
    array = array.astype(np.float32)
    array[3, 3, 3] = np.nan
    write_mhd(image, array, spacing_of(image))
    return image


def fractional_label(image: Path, label: Path) -> Path:
    array, _ = read_mhd(label)
    array = array.astype(np.float32)
    array[array == array.max()] = 24.5
    write_mhd(label, array, spacing_of(label))
    return label


def stray_255(image: Path, label: Path) -> Path:
    array, _ = read_mhd(label)
    array[0, 0, 0] = 255
    write_mhd(label, array, spacing_of(label))
    return label


def copy_bundle(tmp_path: Path) -> Path:
    root = tmp_path / BUNDLE
    shutil.copytree(REPO / "bundles" / BUNDLE / "configs", root / "configs")
    (tmp_path / "tiny.json").write_text(json.dumps(SPECS[BUNDLE].tiny))
    return root


def run(root: Path, configs: list[str], tmp_path: Path, data: Path, run_id: str) -> subprocess.CompletedProcess:
    files = [root / "configs" / c for c in configs] + [tmp_path / "tiny.json"]
    cmd = bundle_command(root, files, "--dataset_dir", str(data), run_id=run_id)
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=REPO)


@pytest.mark.parametrize(
    "damage, message",
    [
        (short_label, "expected the shape of its image"),
        (coarse_label_spacing, "expected the spacing (mm) of its image"),
        (nan_image, "expected finite voxel values, found 1 NaN"),
        (fractional_label, "expected integer label values, found [24.5]"),
        (stray_255, "expected label values 0 (background), 1-25 or 28 (C1-L6, T13), found [255]"),
    ],
)
def test_damaged_training_data_are_refused(bundle_data, tmp_path, damage, message):
    data = tmp_path / "data"
    shutil.copytree(bundle_data(BUNDLE), data)
    image = sorted((data / "train" / "img").glob("*.mhd"))[0]
    damaged = damage(image, data / "train" / "seg" / f"{image.stem}_label.mhd")
    root = copy_bundle(tmp_path)
    r = run(root, ["train.json"], tmp_path, data, "training")
    assert r.returncode == 1, r.stderr[-3000:]
    assert f"{damaged}: {message}" in r.stderr, r.stderr[-3000:]
    assert not (root / "models").exists() or not any((root / "models").iterdir())


def test_evaluation_without_a_test_folder_is_refused(bundle_data, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(bundle_data(BUNDLE), data)
    shutil.rmtree(data / "test")
    root = copy_bundle(tmp_path)
    r = run(root, ["inference.json", "evaluate.json"], tmp_path, data, "run")
    assert r.returncode == 1, r.stderr[-3000:]
    assert f"{data / 'test'}: expected the test/ split folder (img/, seg/), found only ['train']" in r.stderr
    assert not (root / "eval").exists()
