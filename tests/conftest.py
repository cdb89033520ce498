"""Session fixtures shared by the bundle tests and the app tests: each bundle's synthetic data, written once, and
each bundle trained once (tiny), so that every test folder reuses the same runs."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.bundles.conftest import DEEPIGEOS_STAGES, REPO, SPECS, run_bundle


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test that trains a bundle end to end (through the ``trained_bundle`` fixture) is ``slow``:
    ``pytest -m "not slow"`` is the quick loop, CI runs everything."""
    for item in items:
        if "trained_bundle" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def bundle_data(tmp_path_factory) -> Callable[[str], Path]:
    """Synthetic data per bundle, written once per session."""
    cache: dict[str, Path] = {}

    def get(name: str) -> Path:
        if name not in cache:
            cache[name] = SPECS[name].write_data(tmp_path_factory.mktemp(f"data_{name}"))
        return cache[name]

    return get


@dataclass(frozen=True)
class TrainedBundle:
    name: str
    root: Path  # a copy of the bundle (the repository is never written to)
    tmp: Path
    data: Path
    log: str


@pytest.fixture(scope="session")
def trained_bundle(tmp_path_factory, bundle_data) -> Callable[[str], TrainedBundle]:
    """Each bundle copied to a temporary folder and trained once (tiny, with ``--tracking mlflow``)."""
    cache: dict[str, TrainedBundle] = {}

    def get(name: str) -> TrainedBundle:
        if name not in cache:
            tmp = tmp_path_factory.mktemp(f"bundle_{name}")
            root = Path(
                shutil.copytree(REPO / "bundles" / name, tmp / name, ignore=shutil.ignore_patterns("models", "eval"))
            )
            data = bundle_data(name)
            r = run_bundle(
                root,
                SPECS[name].train_configs,
                tmp,
                "--dataset_dir",
                str(data),
                "--tracking",
                "mlflow",
                run_id="training",
            )
            cache[name] = TrainedBundle(name, root, tmp, data, r.stdout + r.stderr)
        return cache[name]

    return get


@pytest.fixture(scope="session")
def deepigeos_staged(trained_bundle) -> TrainedBundle:
    """The tiny trained DeepIGeoS bundle (P-Net) with every later stage trained on it, in order, once per session."""
    tb = trained_bundle("deepigeos_brats")
    for configs in DEEPIGEOS_STAGES.values():
        run_bundle(tb.root, configs, tb.tmp, "--dataset_dir", str(tb.data), run_id="training")
    return tb
