"""End-to-end latency of the MONAI Label app (apps/monailabel) through HTTP; prints measured figures.

A real ``monailabel start_server`` on 127.0.0.1 serves copies of the bundles with **untrained** weights of their
default settings (written by this script from each bundle's ``inference.json``; the P-Net's last bias is set so that
the automatic DeepIGeoS label is empty, so each refinement works on the box of the clicks grown by ``refine_margin``,
as after an automatic label of the tumour's size). The datastore holds one synthetic case per bundle: a BraTS FLAIR of
``--brats_shape`` (default 240x240x155, 1 mm), an ACDC frame and a kaggle_3m patient as 4D NIfTI.

(a) automatic segmentation per bundle: seconds from request to returned label (median, min, max of ``--repeats``
    after one warm-up request);
(b) DeepIGeoS clicks: ``--clicks`` foreground clicks placed in the synthetic tumour (its centre, then voxels spread
    over it), each request sending all clicks so far, as 3D Slicer does; seconds per request, and the box the
    refinement worked on.

Usage: python benchmarks/bench_monailabel.py [--brats_shape "[240,240,155]"] [--clicks 5] [--repeats 3]
    [--device cpu|cuda] [--threads 0]   (0: torch's default in the server)
"""

from __future__ import annotations

import datetime
import json
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import fire
import monai
import nibabel as nib
import numpy as np
import requests
import torch
from monai.bundle import ConfigParser

from common.synthetic.acdc import write_synthetic_acdc
from common.synthetic.brats import TRAINING_FOLDERS, write_synthetic_brats
from common.synthetic.lgg import write_synthetic_lgg

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # the app is a folder of the repository, not part of the installed package
from apps.monailabel.lib.lgg import write_lgg_studies  # noqa: E402
from apps.monailabel.lib.server import start_server, stop_server  # noqa: E402

WEIGHTS = {  # bundle -> {config id of a network in inference.json: the weights file it is served from}
    "igs_acdc": {"network_def": "model.pt"},
    "unet_lgg": {"network_def": "model.pt"},
    "deepigeos_brats": {"network_def": "model.pt", "pnet_crf_def": "pnet_crf.pt", "rnet_crf_def": "rnet_crf.pt"},
}


def _untrained_bundles(out: Path) -> Path:
    """Copies of the bundles' configs with untrained weights of their default settings in ``models/``."""
    torch.manual_seed(0)
    for name, nets in WEIGHTS.items():
        root = Path(
            shutil.copytree(REPO / "bundles" / name, out / name, ignore=shutil.ignore_patterns("models", "eval"))
        )
        (root / "models").mkdir()
        parser = ConfigParser()
        parser.read_config(str(root / "configs" / "inference.json"))
        parser.update({"bundle_root": str(root), "device": "$torch.device('cpu')"})
        for net_id, file in nets.items():
            net = parser.get_parsed_content(net_id)
            if name == "deepigeos_brats" and net_id == "pnet_crf_def":  # an empty automatic label (P-Net's bias)
                last = [m for m in net.backbone.modules() if isinstance(m, torch.nn.Conv3d)][-1]
                with torch.no_grad():
                    last.bias.copy_(torch.tensor([10.0, -10.0]))
            torch.save(net.state_dict(), root / "models" / file)
    return out


def _studies(out: Path, brats_shape: Sequence[int]) -> tuple[Path, dict[str, str], np.ndarray]:
    """The datastore (one case per bundle) -> (folder, bundle -> image id, the BraTS case's tumour mask)."""
    studies = out / "studies"
    studies.mkdir()
    brats = write_synthetic_brats(out / "brats", n_cases=1, shape=tuple(brats_shape), n_validation=0, seed=0)
    case = sorted((brats / TRAINING_FOLDERS[2020]).iterdir())[0]
    shutil.copy(case / f"{case.name}_flair.nii.gz", studies / "brats_case.nii.gz")
    tumour = np.asarray(nib.load(case / f"{case.name}_seg.nii.gz").dataobj) > 0
    acdc = write_synthetic_acdc(out / "acdc", n_training=1, n_testing=0, seed=0)
    frame = sorted(acdc.glob("training/*/*_frame[0-9][0-9].nii.gz"))[0]
    shutil.copy(frame, studies / "acdc_case.nii.gz")
    lgg = write_lgg_studies(write_synthetic_lgg(out / "lgg", n_patients=1, seed=0), studies)[0]
    return studies, {"deepigeos_brats": "brats_case", "igs_acdc": "acdc_case", "unet_lgg": lgg.name[:-7]}, tumour


def _post(url: str, model: str, image: str, params: dict) -> float:
    t0 = time.perf_counter()
    r = requests.post(
        f"{url}/infer/{model}", params={"image": image, "output": "image"}, data={"params": json.dumps(params)}
    )
    seconds = time.perf_counter() - t0
    if r.status_code != 200:
        raise RuntimeError(f"{model} {params}: HTTP {r.status_code} {r.text[:1000]}")
    return seconds


def _spread_clicks(mask: np.ndarray, n: int) -> list[list[int]]:
    """The voxel of ``mask`` nearest its centroid, then voxels of ``mask`` far from the clicks so far."""
    points = np.argwhere(mask)
    clicks = [points[np.abs(points - points.mean(0)).sum(1).argmin()]]
    for _ in range(n - 1):
        dist = np.min([np.abs(points - c).sum(1) for c in clicks], axis=0)
        clicks.append(points[dist.argmax()])
    return [c.tolist() for c in clicks]


def main(
    brats_shape: Sequence[int] = (240, 240, 155),
    clicks: int = 5,
    repeats: int = 3,
    device: str = "cpu",
    threads: int = 0,
) -> None:
    gpu = torch.cuda.get_device_name(0) if device == "cuda" else "none"
    print(
        f"# {datetime.date.today()} | server on {device} (GPU {gpu}), OMP_NUM_THREADS "
        f"{threads or 'default'} | torch {torch.__version__}, MONAI {monai.__version__} | synthetic data, "
        "untrained weights of each bundle's default settings"
    )
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        bundles = _untrained_bundles(tmp / "bundles")
        studies, images, tumour = _studies(tmp, brats_shape)
        conf = {"bundles_dir": str(bundles), "bundles": ",".join(WEIGHTS), "device": device}
        log = tmp / "server.log"
        url, proc = start_server(studies, conf, log, threads=threads or torch.get_num_threads())
        try:
            params = {"igs_acdc": {"pattern": "center"}}
            for bundle, image in images.items():
                shape = nib.load(studies / f"{image}.nii.gz").shape
                _post(url, bundle, image, params.get(bundle, {}))  # warm-up
                times = [_post(url, bundle, image, params.get(bundle, {})) for _ in range(repeats)]
                print(
                    f"(a) automatic {bundle}, image {shape}: {statistics.median(times):.2f} s per request "
                    f"[{min(times):.2f}-{max(times):.2f}] over {repeats}"
                )
            points = _spread_clicks(tumour, clicks)
            box = np.ptp(np.argwhere(tumour), 0) + 1
            _post(url, "deepigeos_brats_refine", "brats_case", {"reset": True})  # the automatic label, cached
            for k in range(1, clicks + 1):
                seconds = _post(url, "deepigeos_brats_refine", "brats_case", {"foreground": points[:k]})
                span = np.ptp(np.asarray(points[:k]), 0) + 1
                print(
                    f"(b) DeepIGeoS click {k} on {tuple(brats_shape)} (tumour box {tuple(box.tolist())}, clicks span "
                    f"{tuple(span.tolist())}, + refine_margin 16 each side): {seconds:.2f} s request to label"
                )
        finally:
            stop_server(proc)


if __name__ == "__main__":
    fire.Fire(main)
