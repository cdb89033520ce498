"""The MONAI Label app (apps/monailabel) through a real ``monailabel start_server``: automatic inference of every
bundle, DeepIGeoS clicks, concurrent clients and bad requests (training: ``test_monailabel_train.py``)."""

from __future__ import annotations

import gzip
import json
import time
from concurrent.futures import ThreadPoolExecutor

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
        "igs_brats_classification",
        "igs_brats_reconstruction",
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
    assert set(info["trainers"]) == {"unet_lgg", "deepigeos_brats", "igs_brats", "resunet_zoom_atlas"}


def test_clicks_refine_the_automatic_label(served):
    image = served.images["deepigeos_brats"]
    flair = np.asarray(image_of(served, "deepigeos_brats").dataobj)
    user = {"client_id": "test-clicks"}  # this test's own refinement state
    start, result = infer(served, "deepigeos_brats_refine", image, {**user, "reset_state": True})
    assert (result["start"], result["state"], result["user"]) == ("automatic", "new", "test-clicks")
    assert result["clicks"] == {"foreground": 0, "background": 0}
    auto, _ = infer(served, "deepigeos_brats", image)
    np.testing.assert_array_equal(np.asarray(start.dataobj), np.asarray(auto.dataobj))  # the automatic label at first
    label0 = np.asarray(start.dataobj)
    brain = flair > 0
    positives = np.argwhere((label0 == 1) & brain)
    assert len(positives) >= 2, "the tiny automatic segmentation found no tumour to click on"
    bg = positives[len(positives) // 2].tolist()
    far = positives[np.abs(positives - bg).sum(1).argmax()].tolist()  # a second false positive, far from the first
    label1, result = infer(served, "deepigeos_brats_refine", image, {**user, "background": [bg, far]})
    label1 = np.asarray(label1.dataobj)
    assert (result["state"], result["refine_from"]) == ("kept", "initial")
    assert label1[tuple(bg)] == 0 and label1[tuple(far)] == 0, "background clicks must remove the false positives"
    box = np.zeros_like(brain)  # the brain crop of the bundle: clicks must fall inside it
    box[tuple(slice(lo, hi + 1) for lo, hi in zip(np.argwhere(brain).min(0), np.argwhere(brain).max(0)))] = True
    clicked = np.zeros_like(brain)
    clicked[tuple(np.array([bg, far]).T)] = True
    missed = np.argwhere((label1 == 0) & box & ~clicked)  # a voxel the current label misses, far from the clicks
    pool = missed if len(missed) else np.argwhere(box & ~clicked)  # the tiny networks may label the whole crop
    fg = pool[np.abs(pool - bg).sum(1).argmax()].tolist()
    label2, result = infer(served, "deepigeos_brats_refine", image, {**user, "foreground": [fg], "background": [bg]})
    label2 = np.asarray(label2.dataobj)
    assert result["clicks"] == {"foreground": 1, "background": 2}  # the clicks so far: far is still one
    assert result["new_clicks"] == {"foreground": 1, "background": 0}
    assert label2[tuple(fg)] == 1, "the foreground click must end as foreground"
    assert label2[tuple(bg)] == 0 and label2[tuple(far)] == 0
    assert label2.shape == flair.shape
    again, result = infer(served, "deepigeos_brats_refine", image, {**user, "reset": True})  # the older reset
    assert (result["start"], result["state"]) == ("automatic", "new")
    np.testing.assert_array_equal(np.asarray(again.dataobj), label0)


def test_bad_requests_get_4xx_and_the_server_keeps_serving(served):
    image = served.images["deepigeos_brats"]
    shape = image_of(served, "deepigeos_brats").shape
    voxel = (np.argwhere(np.asarray(image_of(served, "deepigeos_brats").dataobj) > 0).mean(0)).astype(int).tolist()

    def post(model: str, image: str, params) -> requests.Response:
        data = {"params": params if isinstance(params, str) else json.dumps(params)}
        return requests.post(f"{served.url}/infer/{model}", params={"image": image}, data=data, timeout=120)

    refine = "deepigeos_brats_refine"
    cases = [
        ("no_such_model", image, {}, 404, "expected one of"),
        ("deepigeos_brats", "no_such_image", {}, 404, "image: expected an image id of the datastore"),
        ("deepigeos_brats", str(served.studies / f"{image}.nii.gz"), {}, 404, "a file uploaded with the request"),
        ("deepigeos_brats", "", {"image": "/etc/hostname"}, 404, "found '/etc/hostname'"),
        ("deepigeos_brats", "", {}, 400, "image: expected an image id (image=), an uploaded image (file)"),
        ("deepigeos_brats", image, "{'reset': true}", 400, "params: expected a JSON object"),
        ("deepigeos_brats", image, "[1, 2]", 400, "params: expected a JSON object"),
        (refine, image, {"foreground": [[shape[0] + 5, 0, 0]]}, 400, "inside the image"),
        (refine, image, {"foreground": [[2**70, 1, 1]]}, 400, "params.foreground: expected voxel indices inside"),
        (refine, image, {"foreground": "centre"}, 400, "voxel indices"),
        (refine, image, {"foreground": [[1.5, 2, 3]]}, 400, "voxel indices"),
        (refine, image, {"background": [[True, 2, 3]]}, 400, "params.background: expected voxel"),
        (refine, image, {"reset": "yes"}, 400, "params.reset: expected true or false"),
        (refine, image, {"reset_state": 1}, 400, "params.reset_state: expected true or false, found 1"),
        (refine, image, {"refine_from": "latest"}, 400, "params.refine_from: expected one of ['initial', 'previous']"),
        (refine, image, {"client_id": 5}, 400, "params.client_id: expected a string, found 5"),
        (
            refine,
            image,
            {"foreground": [voxel], "background": [voxel]},
            400,
            f"found voxel {voxel} of the image in both the foreground and the background clicks",
        ),
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
