"""Resident memory of the MONAI Label app (apps/monailabel) over many uploads; prints measured figures.

A real ``monailabel start_server`` on 127.0.0.1 serves a copy of ``deepigeos_brats`` with untrained weights of its
default settings (:func:`untrained_deepigeos`) and the app conf's refinement cache bounds. A client then uploads
``--uploads`` times a synthetic BraTS FLAIR of ``--brats_shape`` (each upload with its own noise, so a new image for
the server: a new temporary path and content hash) to ``deepigeos_brats_refine`` with one foreground click (the
automatic segmentation, then one refinement). Printed, before the first upload and after every ``--every``: the
server's resident memory (RSS, psutil), the cache's entries and bytes (from the result JSON) and the seconds per
upload.

Usage: python benchmarks/bench_monailabel_memory.py [--brats_shape "[96,96,64]"] [--uploads 100] [--every 10]
    [--cache_entries 8] [--cache_bytes 2147483648] [--threads 1]
"""

from __future__ import annotations

import datetime
import json
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import fire
import monai
import nibabel as nib
import numpy as np
import psutil
import requests
import torch
from monai.bundle import ConfigParser

from common.synthetic.brats import TRAINING_FOLDERS, write_synthetic_brats

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # the app is a folder of the repository, not part of the installed package
from apps.monailabel.lib.server import start_server, stop_server  # noqa: E402

__all__ = ["synthetic_flair", "untrained_deepigeos"]


def untrained_deepigeos(out: Path) -> Path:
    """A copy of ``deepigeos_brats`` (configs only) in ``out`` with untrained weights of its default settings where
    ``inference.json`` loads them: the automatic network (``network``, at ``ckpt_path``) and the refinement
    (R-Net + CRF-Net(fu), at ``refine_weights``) -> ``out``."""
    torch.manual_seed(0)
    root = Path(shutil.copytree(REPO / "bundles" / "deepigeos_brats", out / "deepigeos_brats", ignore=_no_weights))
    (root / "models").mkdir()
    parser = ConfigParser()
    parser.read_config(str(root / "configs" / "inference.json"))
    parser.update({"bundle_root": str(root), "device": "$torch.device('cpu')"})
    torch.save(parser.get_parsed_content("network").state_dict(), parser.get_parsed_content("ckpt_path"))
    refine = "rnet_crf_def" if parser.get_parsed_content("refine_crf") else "rnet_def"
    torch.save(parser.get_parsed_content(refine).state_dict(), parser.get_parsed_content("refine_weights"))
    return out


def _no_weights(folder: str, names: list[str]) -> list[str]:
    return [n for n in names if n in ("models", "eval")]


def synthetic_flair(out: Path, shape: Sequence[int]) -> tuple[nib.Nifti1Image, np.ndarray]:
    """One synthetic BraTS case of ``shape`` -> (its FLAIR, its tumour mask)."""
    brats = write_synthetic_brats(out / "brats", n_cases=1, shape=tuple(shape), n_validation=0, seed=0)
    case = min((brats / TRAINING_FOLDERS[2020]).iterdir())
    tumour = np.asarray(nib.load(case / f"{case.name}_seg.nii.gz").dataobj) > 0
    return nib.load(case / f"{case.name}_flair.nii.gz"), tumour


def main(
    brats_shape: Sequence[int] = (96, 96, 64),
    uploads: int = 100,
    every: int = 10,
    cache_entries: int = 8,
    cache_bytes: int = 2 * 1024**3,
    threads: int = 1,
) -> None:
    print(
        f"# {datetime.date.today()} | server on cpu, OMP_NUM_THREADS {threads} | torch {torch.__version__}, "
        f"MONAI {monai.__version__} | synthetic BraTS FLAIR {tuple(brats_shape)}, untrained weights | cache "
        f"{cache_entries} entries, {cache_bytes} bytes"
    )
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        flair, tumour = synthetic_flair(tmp, brats_shape)
        base = np.asarray(flair.dataobj).astype(np.float32)
        click = np.argwhere(tumour)[len(np.argwhere(tumour)) // 2].tolist()
        (tmp / "studies").mkdir()
        conf = {
            "bundles_dir": str(untrained_deepigeos(tmp / "bundles")),
            "bundles": "deepigeos_brats",
            "device": "cpu",
            "refine_cache_entries": str(cache_entries),
            "refine_cache_bytes": str(cache_bytes),
        }
        url, proc = start_server(tmp / "studies", conf, tmp / "server.log", threads=threads)
        server = psutil.Process(proc.pid)
        rng = np.random.default_rng(0)
        upload = tmp / "upload.nii"
        try:
            print(f"before the first upload: RSS {server.memory_info().rss / 2**20:.0f} MiB")
            t0 = time.perf_counter()
            for k in range(1, uploads + 1):
                noisy = np.where(base > 0, base + rng.normal(0, 1, base.shape).astype(np.float32), 0)
                nib.save(nib.Nifti1Image(noisy, flair.affine), upload)
                with open(upload, "rb") as f:
                    r = requests.post(
                        f"{url}/infer/deepigeos_brats_refine",
                        params={"output": "json"},
                        data={"params": json.dumps({"foreground": [click]})},
                        files={"file": ("upload.nii", f)},
                    )
                if r.status_code != 200:
                    raise RuntimeError(f"upload {k}: HTTP {r.status_code} {r.text[:1000]}")
                if k % every == 0:
                    cache = r.json()["cache"]
                    print(
                        f"after {k} uploads: RSS {server.memory_info().rss / 2**20:.0f} MiB, cache {cache['entries']} "
                        f"entries {cache['bytes'] / 2**20:.1f} MiB, {(time.perf_counter() - t0) / every:.2f} s per "
                        "upload"
                    )
                    t0 = time.perf_counter()
        finally:
            stop_server(proc)


if __name__ == "__main__":
    fire.Fire(main)
