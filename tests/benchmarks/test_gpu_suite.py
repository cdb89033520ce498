"""The GPU suite's dry run (every measurement's code path, tiny, on the CPU) and how ``bench_real_size`` reports a
bundle that does not fit or fails."""

from __future__ import annotations

import json
import re
import sys

import pytest
import torch

from tests.bundles.conftest import REPO

sys.path.insert(0, str(REPO / "benchmarks"))
import bench_real_size  # noqa: E402
import gpu_suite  # noqa: E402


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("gpu_suite")
    out = tmp / "suite.md"
    return out, gpu_suite.run(out, dry_run=True, data=str(tmp / "work"))


def table_rows(text: str) -> list[list[str]]:
    return [[c.strip() for c in line.strip("|").split("|")] for line in text.splitlines()[6:]]


@pytest.mark.slow  # the dry run: about a minute on 2 idle cores
def test_dry_run_measures_everything(dry_run):
    out, text = dry_run
    assert out.read_text() == text + "\n"
    assert "dry run" in text.splitlines()[0] and "driver" in text.splitlines()[2]
    rows = table_rows(text)
    assert all(len(r) == 4 and r[3] == "-" for r in rows), "a dry run judges no goal"
    names = [r[0] for r in rows]
    assert not [r for r in rows if re.match(r"(failed|error|does not fit|killed|timed out)", r[1])], rows
    assert names[0].startswith("IGS x4 search") and re.fullmatch(r"\d+\.\d s", rows[0][1])
    assert sum(n.startswith("DeepIGeoS refinement step") for n in names) == len(gpu_suite.TINY.tumours)
    assert sum(n.startswith("DeepIGeoS click") for n in names) == 2 * len(gpu_suite.TINY.clicks)
    assert any(n.startswith("iterative FCN, one evaluation") for n in names)
    assert any(n.startswith("unet_lgg training, bundle pipeline / seed-style") for n in names)
    for bundle, spec in bench_real_size.SPECS.items():
        phases = [f"train {s}".strip() for s in spec.stages] + ["inference"]
        measured = [n for n in names if n.startswith(f"{bundle} ") and n.endswith(" at real size")]
        assert measured == [f"{bundle} {p} at real size" for p in phases]
    spine = rows[names.index("iterative_fcn_spine inference at real size")]
    assert re.search(r"\d+ steps \(untrained\)", spine[1]) and spine[2] == "< 10 s"


@pytest.mark.slow  # two measuring processes
def test_real_size_reports_what_does_not_fit_and_what_fails(tmp_path):
    data = bench_real_size.write_data(["unet_lgg"], tmp_path / "data", tiny=True)["unet_lgg"]
    tight = bench_real_size.measure_bundle("unet_lgg", data, tmp_path / "tight", 1, memory_gib=0.1, tiny=True)
    assert [r["status"] for r in tight.values()] == ["does not fit"] * 2, tight
    assert re.search(r"can't allocate memory|bad_alloc|MemoryError", tight["train"]["error"]), tight  # C++ or Python
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"features": -4}))
    broken = bench_real_size.measure_bundle("unet_lgg", data, tmp_path / "bad", 1, overrides=[str(bad)], tiny=True)
    assert [r["status"] for r in broken.values()] == ["error", "ok"], broken  # overrides are merged on training
    text = bench_real_size.table({"unet_lgg": tight})
    assert text.count("| does not fit: ") == 2


def test_failure_kinds():
    wrapped = RuntimeError("Failed to instantiate component")
    wrapped.__cause__ = MemoryError("Unable to allocate 3.1 GiB")
    assert bench_real_size._failure(wrapped) == {
        "status": "does not fit",
        "error": "MemoryError: Unable to allocate 3.1 GiB",
    }
    assert bench_real_size._failure(ValueError("features: expected > 0\nmore"))["error"] == (
        "ValueError: features: expected > 0"
    )


def test_bad_arguments(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match=r"expected names from \[.*unet_lgg.*\], found \['nope'\]"):
        bench_real_size.write_data(["nope"], tmp_path)
    with pytest.raises(ValueError, match="iterations: expected >= 1"):
        bench_real_size.measure_bundle("unet_lgg", str(tmp_path), tmp_path, 0)
    with pytest.raises(ValueError, match=r"overrides: expected keys among .*, found \['igs_acdc'\]"):
        bench_real_size.run(["unet_lgg"], overrides={"igs_acdc": ["x.json"]})
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(RuntimeError, match="expected a CUDA device, found none"):
        gpu_suite.run(tmp_path / "suite.md")
