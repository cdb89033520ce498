"""Session fixtures shared by the bundle tests and the app tests: each bundle's synthetic data, written once, and
each bundle trained once (tiny), so that every test folder reuses the same runs.

With pytest-xdist (``scripts/test.sh`` runs two workers) the data and the trained bundles are made once per run in
the run's shared temporary folder, under a file lock, by whichever worker needs them first; each worker copies the
trained bundle it uses, so that what one worker's tests write into its copy (patterns, later stages, evaluations)
never reaches another.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from filelock import FileLock

from tests.bundles.conftest import DEEPIGEOS_STAGES, REPO, SPECS, run_bundle


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test that trains a bundle end to end (through the ``trained_bundle`` fixture) is ``slow``:
    ``pytest -m "not slow"`` is the quick loop, CI runs everything."""
    for item in items:
        if "trained_bundle" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.slow)


SPREAD_FILES = {
    f"tests/bundles/test_{name}.py" for name in ("bundles", "multi_gpu", "multi_gpu_evaluate", "preprocessing")
}
"""Files whose tests are independent checks of one bundle each: spread over the workers test by test."""


def pytest_xdist_make_scheduler(config: pytest.Config, log):
    """``-n N --dist loadfile`` (``scripts/test.sh``): each test file runs on one worker, since its tests share
    module-scoped runs (a search, the later DeepIGeoS stages, a MONAI Label server, a data set), except the files of
    :data:`SPREAD_FILES`, spread test by test. (pytest-xdist's ``loadgroup`` marks do not work with pytest 9: it
    renames ``item._nodeid``, which pytest 9 no longer reads.)"""
    if config.getvalue("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class SpreadFileScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            file = nodeid.split("::", 1)[0]
            return nodeid if file in SPREAD_FILES else file

    return SpreadFileScheduling(config, log)


def _once(shared: Path, key: str, build: Callable[[Path], None]) -> Path:
    """``shared / key``, filled by ``build(folder)`` once per test run across xdist workers (a file lock and a marker
    written when ``build`` returns; a failed build is retried by the next caller)."""
    folder = shared / key
    with FileLock(f"{folder}.lock"):
        if not (folder / ".done").is_file():
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir(parents=True)
            build(folder)
            (folder / ".done").touch()
    return folder


@pytest.fixture(scope="session")
def shared_tmp(tmp_path_factory) -> Path:
    """A temporary folder every xdist worker of this run sees (this session's own one without xdist)."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


@pytest.fixture(scope="session")
def bundle_data(shared_tmp) -> Callable[[str], Path]:
    """Synthetic data per bundle, written once per run (read-only for the tests)."""
    cache: dict[str, Path] = {}

    def get(name: str) -> Path:
        if name not in cache:
            folder = _once(
                shared_tmp, f"data_{name}", lambda f: (f / "path.txt").write_text(str(SPECS[name].write_data(f)))
            )
            cache[name] = Path((folder / "path.txt").read_text())
        return cache[name]

    return get


@dataclass(frozen=True)
class TrainedBundle:
    name: str
    root: Path  # a copy of the bundle (the repository is never written to)
    tmp: Path
    data: Path
    log: str


def _copy(folder: Path, tmp: Path, name: str, data: Path) -> TrainedBundle:
    """This worker's own copy of a trained bundle folder made by :func:`_once`."""
    shutil.copytree(folder, tmp, dirs_exist_ok=True)
    return TrainedBundle(name, tmp / name, tmp, data, (tmp / "train.log").read_text())


@pytest.fixture(scope="session")
def trained_bundle(tmp_path_factory, shared_tmp, bundle_data) -> Callable[[str], TrainedBundle]:
    """Each bundle trained once per run (tiny, with ``--tracking mlflow``) on a copy of it, and copied per worker."""
    cache: dict[str, TrainedBundle] = {}

    def get(name: str) -> TrainedBundle:
        if name not in cache:
            data = bundle_data(name)

            def train(folder: Path) -> None:
                root = shutil.copytree(
                    REPO / "bundles" / name, folder / name, ignore=shutil.ignore_patterns("models", "eval")
                )
                args = ("--dataset_dir", str(data), "--tracking", "mlflow")
                r = run_bundle(Path(root), SPECS[name].train_configs, folder, *args, run_id="training")
                (folder / "train.log").write_text(r.stdout + r.stderr)

            folder = _once(shared_tmp, f"bundle_{name}", train)
            cache[name] = _copy(folder, tmp_path_factory.mktemp(f"bundle_{name}"), name, data)
        return cache[name]

    return get


@pytest.fixture(scope="session")
def deepigeos_staged(trained_bundle, tmp_path_factory, shared_tmp) -> TrainedBundle:
    """The tiny trained DeepIGeoS bundle (P-Net) with every later stage trained on it, in order, once per run."""
    tb = trained_bundle("deepigeos_brats")

    def stages(folder: Path) -> None:
        shutil.copytree(tb.tmp, folder, dirs_exist_ok=True)
        for configs in DEEPIGEOS_STAGES.values():
            run_bundle(folder / tb.name, configs, folder, "--dataset_dir", str(tb.data), run_id="training")

    folder = _once(shared_tmp, "deepigeos_staged", stages)
    return _copy(folder, tmp_path_factory.mktemp("deepigeos_staged"), tb.name, tb.data)
