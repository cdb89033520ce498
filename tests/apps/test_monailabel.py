"""The MONAI Label app (apps/monailabel) through a real ``monailabel start_server``: automatic inference of every
bundle, DeepIGeoS clicks, training from the datastore, concurrent clients and bad requests."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import requests
from requests_toolbelt.multipart.decoder import MultipartDecoder

pytestmark = pytest.mark.slow


def infer(
    served, model: str, image: str, params: dict | None = None, timeout: float = 120
) -> tuple[nib.Nifti1Image, dict]:
    """``POST /infer/<model>?image=<id>`` -> (label image, result params)."""
    r = requests.post(
        f"{served.url}/infer/{model}",
        params={"image": image, "output": "all"},
        data={"params": json.dumps(params or {})},
        timeout=timeout,
    )
    assert r.status_code == 200, f"{model} {params}: {r.status_code} {r.text[:2000]}"
    parts = {}
    for part in MultipartDecoder.from_response(r).parts:
        name = part.headers[b"Content-Disposition"].decode().split('name="')[1].split('"')[0]
        parts[name] = part.content
    data = parts["image"]
    label = nib.Nifti1Image.from_bytes(gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data)
    return label, json.loads(parts["params"])


def image_of(served, bundle: str) -> nib.Nifti1Image:
    return nib.load(served.studies / f"{served.images[bundle]}.nii.gz")


@pytest.mark.parametrize(
    "bundle, params",
    [
        ("igs_acdc", {}),
        ("igs_acdc", {"pattern": "random", "acceleration": 4}),
        ("unet_lgg", {}),
        ("deepigeos_brats", {}),
        ("igs_brats", {"pattern": "center", "acceleration": 8}),
        ("iterative_fcn_spine", {}),
        ("resunet_zoom_atlas", {}),
    ],
)
def test_automatic_inference_returns_a_label_on_the_image_grid(served, bundle, params):
    label, result = infer(served, bundle, served.images[bundle], params)
    image = image_of(served, bundle)
    assert label.shape == image.shape[:3]
    np.testing.assert_allclose(label.affine, image.affine, atol=1e-4)
    values = np.unique(np.asarray(label.dataobj))
    expected = {"igs_acdc": {0, 1, 2, 3}, "igs_brats": {0, 1, 2, 4}, "iterative_fcn_spine": set(range(256))}.get(
        bundle, {0, 1}
    )
    assert set(values.tolist()) <= expected
    assert result["weights"].endswith(".pt") and result["weights_mtime_ns"] > 0


def test_info_lists_every_bundle_with_its_label_names(served):
    info = requests.get(f"{served.url}/info/", timeout=30).json()
    assert set(info["models"]) == {
        "igs_acdc",
        "igs_brats",
        "unet_lgg",
        "deepigeos_brats",
        "deepigeos_brats_refine",
        "iterative_fcn_spine",
        "resunet_zoom_atlas",
    }
    assert info["models"]["iterative_fcn_spine"]["labels"]["vertebra 1 from the top"] == 1
    assert info["models"]["resunet_zoom_atlas"]["labels"] == {"stroke lesion": 1}
    assert info["models"]["deepigeos_brats"]["labels"] == {"whole tumour": 1}
    assert info["models"]["igs_brats"]["labels"] == {"non-enhancing tumour core": 1, "oedema": 2, "enhancing tumour": 4}
    assert info["models"]["deepigeos_brats_refine"]["type"] == "deepgrow"
    assert set(info["trainers"]) == {"unet_lgg", "deepigeos_brats", "igs_brats"}


def test_clicks_refine_the_current_label(served):
    image = served.images["deepigeos_brats"]
    flair = np.asarray(image_of(served, "deepigeos_brats").dataobj)
    start, result = infer(served, "deepigeos_brats_refine", image, {"reset": True})
    assert result["start"] == "automatic" and result["clicks"] == {"foreground": 0, "background": 0}
    auto, _ = infer(served, "deepigeos_brats", image)
    np.testing.assert_array_equal(np.asarray(start.dataobj), np.asarray(auto.dataobj))  # P-Net's label at first
    label0 = np.asarray(start.dataobj)
    brain = flair > 0
    positives = np.argwhere((label0 == 1) & brain)
    assert len(positives) >= 2, "the tiny P-Net found no tumour to click on"
    bg = positives[len(positives) // 2].tolist()
    far = positives[np.abs(positives - bg).sum(1).argmax()].tolist()  # a second false positive, far from the first
    label1, result = infer(served, "deepigeos_brats_refine", image, {"background": [bg, far]})
    label1 = np.asarray(label1.dataobj)
    assert result["start"] == "refinement"
    assert label1[tuple(bg)] == 0 and label1[tuple(far)] == 0, "background clicks must remove the false positives"
    box = np.zeros_like(brain)  # the brain crop of the bundle: clicks must fall inside it
    box[tuple(slice(lo, hi + 1) for lo, hi in zip(np.argwhere(brain).min(0), np.argwhere(brain).max(0)))] = True
    # a voxel the current label misses (at least the second background click), far from the first background click
    missed = np.argwhere((label1 == 0) & box & ~np.all(np.indices(box.shape) == np.reshape(bg, (3, 1, 1, 1)), 0))
    fg = missed[np.abs(missed - bg).sum(1).argmax()].tolist()
    label2, _ = infer(served, "deepigeos_brats_refine", image, {"foreground": [fg], "background": [bg]})
    label2 = np.asarray(label2.dataobj)
    assert label2[tuple(fg)] == 1, "the foreground click must end as foreground"
    assert label2[tuple(bg)] == 0
    assert label2.shape == flair.shape
    again, result = infer(served, "deepigeos_brats_refine", image, {"reset": True})  # back to P-Net's label
    assert result["start"] == "automatic"
    np.testing.assert_array_equal(np.asarray(again.dataobj), label0)


def test_bad_requests_get_4xx_and_the_server_keeps_serving(served):
    image = served.images["deepigeos_brats"]
    shape = image_of(served, "deepigeos_brats").shape

    def post(model: str, image: str, params) -> requests.Response:
        data = {"params": params if isinstance(params, str) else json.dumps(params)}
        return requests.post(f"{served.url}/infer/{model}", params={"image": image}, data=data, timeout=120)

    cases = [
        ("no_such_model", image, {}, 404, "expected one of"),
        ("deepigeos_brats", "no_such_image", {}, 404, "no_such_image"),
        ("deepigeos_brats_refine", image, {"foreground": [[shape[0] + 5, 0, 0]]}, 400, "inside the image"),
        ("deepigeos_brats_refine", image, {"foreground": "centre"}, 400, "voxel indices"),
        ("deepigeos_brats_refine", image, {"foreground": [[1.5, 2, 3]]}, 400, "voxel indices"),
        ("deepigeos_brats_refine", image, {"background": [[True, 2, 3]]}, 400, "params.background: expected voxel"),
        ("deepigeos_brats_refine", image, {"reset": "yes"}, 400, "reset"),
        ("igs_acdc", served.images["igs_acdc"], {"acceleration": "eight"}, 400, "acceleration"),
        ("igs_acdc", served.images["igs_acdc"], {"pattern": "zigzag"}, 400, "zigzag"),
        ("igs_acdc", served.images["igs_acdc"], {"pattern": "learned", "acceleration": 5}, 404, "x5"),  # no such file
    ]
    for model, img, params, code, text in cases:
        r = post(model, img, params)
        assert r.status_code == code and text in r.text, (model, params, r.status_code, r.text[:500])
    r = requests.post(f"{served.url}/train/no_such_model", params={"run_sync": "true"}, timeout=60)
    assert r.status_code == 404, r.text[:500]
    assert requests.get(f"{served.url}/info/", timeout=30).status_code == 200
    infer(served, "unet_lgg", served.images["unet_lgg"])


def test_four_concurrent_clients_of_20_requests_all_succeed(served):
    jobs = [("unet_lgg", {}), ("igs_acdc", {"pattern": "equispaced", "acceleration": 4}), ("deepigeos_brats", {})]

    def client(k: int) -> list[int]:
        codes = []
        for i in range(20):
            model, params = jobs[(k + i) % len(jobs)]
            r = requests.post(
                f"{served.url}/infer/{model}",
                params={"image": served.images[model], "output": "image"},
                data={"params": json.dumps(params)},
                timeout=300,
            )
            codes.append(r.status_code)
        return codes

    t0 = time.perf_counter()
    with ThreadPoolExecutor(4) as pool:
        codes = [c for cs in pool.map(client, range(4)) for c in cs]
    elapsed = time.perf_counter() - t0
    print(f"\nconcurrency: {len(codes)} requests by 4 clients, {codes.count(200)} succeeded, {elapsed:.1f} s")
    assert codes == [200] * 80


def _sha(path: Path) -> str:
    return hashlib.sha1(path.read_bytes()).hexdigest()


def put_label(served, image: str, label: np.ndarray, affine: np.ndarray) -> None:
    buf = io.BytesIO()
    img = nib.Nifti1Image(label.astype(np.uint8), affine)
    buf.write(img.to_bytes())
    r = requests.put(
        f"{served.url}/datastore/label",
        params={"image": image, "tag": "final"},
        files={"label": ("label.nii", buf.getvalue())},
        timeout=60,
    )
    assert r.status_code == 200, r.text[:1000]


def test_saved_labels_train_and_the_next_inference_uses_the_new_weights(served):
    brats = image_of(served, "deepigeos_brats")
    flair = np.asarray(brats.dataobj)
    put_label(served, served.images["deepigeos_brats"], (flair > np.percentile(flair[flair > 0], 85)), brats.affine)
    lgg = image_of(served, "unet_lgg")
    put_label(served, served.images["unet_lgg"], np.asarray(lgg.dataobj)[..., 1] > 0.7, lgg.affine)
    brats4 = image_of(served, "igs_brats")  # (H, W, D, 4): FLAIR first; a BraTS label 0/2/4 of its bright parts
    flair4 = np.asarray(brats4.dataobj)[..., 0]
    bright = np.percentile(flair4[flair4 > 0], [85, 95])
    put_label(
        served, served.images["igs_brats"], np.select([flair4 > bright[1], flair4 > bright[0]], [4, 2]), brats4.affine
    )
    for bundle in ("deepigeos_brats", "unet_lgg", "igs_brats"):
        weights = served.bundles / bundle / "models" / "model.pt"
        _, before = infer(served, bundle, served.images[bundle])
        old = _sha(weights)
        r = requests.post(
            f"{served.url}/train/{bundle}", params={"run_sync": "true"}, json={"max_epochs": 1}, timeout=600
        )
        assert r.status_code == 200, r.text[-3000:] + served.log.read_text()[-3000:]
        assert _sha(weights) != old, f"{bundle}: training did not replace the served weights"
        assert not list(weights.parent.glob(".train-*")), "the run's folder was left behind"
        _, after = infer(served, bundle, served.images[bundle])
        assert after["weights_mtime_ns"] == weights.stat().st_mtime_ns != before["weights_mtime_ns"]


def test_a_failed_training_run_leaves_the_served_weights_as_they_were(served):
    lgg = image_of(served, "unet_lgg")
    put_label(served, served.images["unet_lgg"], np.zeros(lgg.shape[:2] + (1,)), lgg.affine)  # wrong depth
    weights = served.bundles / "unet_lgg" / "models" / "model.pt"
    old = _sha(weights)
    r = requests.post(f"{served.url}/train/unet_lgg", params={"run_sync": "true"}, json={"max_epochs": 1}, timeout=600)
    assert r.status_code >= 400
    assert _sha(weights) == old and not list(weights.parent.glob(".train-*"))
    assert requests.get(f"{served.url}/info/", timeout=30).status_code == 200
