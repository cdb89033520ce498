"""Training through the MONAI Label app (apps/monailabel) as 3D Slicer drives it, on a real ``monailabel
start_server``: saved labels train and the next inference uses the new weights, the progress in ``/info/``'s
``train_stats`` while and after a run, validation images apart from the training ones, bad params refused before a
task is queued, the zoom and DeepIGeoS R-Net train tasks, and igs_brats' classification and reconstruction tasks."""

from __future__ import annotations

import hashlib
import io
import math
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import requests
import torch
from monai.transforms import LoadImage

from apps.monailabel.lib.bundles import BUNDLES, BundleModel
from tests.apps.test_monailabel import image_of, infer

pytestmark = pytest.mark.slow


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


def bright_label(image: nib.Nifti1Image, percentile: float = 85) -> np.ndarray:
    """A label of the image's bright voxels (the tumour of the synthetic FLAIR, a blob of the synthetic T1w)."""
    data = np.asarray(image.dataobj)
    return data > np.percentile(data[data > 0], percentile)


def train(served, bundle: str, params: dict, run_sync: bool = True) -> requests.Response:
    """``POST /train/<bundle>`` as MONAI Label's client ``train_start`` sends it (params as the JSON body)."""
    return requests.post(f"{served.url}/train/{bundle}", params={"run_sync": run_sync}, json=params, timeout=900)


def train_stats(served, bundle: str) -> dict:
    """The bundle's ``train_stats`` of ``GET /info/`` (what the 3D Slicer module shows)."""
    return requests.get(f"{served.url}/info/", timeout=60).json()["train_stats"][bundle]


def train_tasks(served) -> list[dict]:
    """Every train task MONAI Label has queued (``GET /train/?all=true``; 404 when there is none)."""
    r = requests.get(f"{served.url}/train/", params={"all": True}, timeout=60)
    assert r.status_code in (200, 404), r.text[:500]
    return r.json() if r.status_code == 200 else []


def test_bad_train_params_are_refused_before_a_task_is_queued(served):
    queued = len(train_tasks(served))
    cases = [
        ("unet_lgg", {"max_epochs": 0}, 400, "params.max_epochs: expected an integer >= 1, found 0"),
        ("unet_lgg", {"max_epochs": "2"}, 400, "params.max_epochs: expected an integer >= 1, found '2'"),
        ("unet_lgg", {"max_epochs": True}, 400, "params.max_epochs"),
        ("deepigeos_brats", {"stage": "cnet"}, 400, "params.stage: expected one of ['rnet', 'pnet'], found 'cnet'"),
        ("unet_lgg", {"stage": "rnet"}, 400, "params.stage: expected one of ['default']"),
        ("resunet_zoom_atlas", {}, 400, "expected images with a final label in the datastore whose id starts with"),
        ("no_such_model", {}, 404, "train model: expected one of"),
    ]
    for model, params, code, text in cases:
        r = train(served, model, params, run_sync=False)  # MONAI Label's client train_start: queued, not run
        assert r.status_code == code and text in r.text, (model, params, r.status_code, r.text[:500])
    # POST /train/ (every model; MONAI Label gives each model {**params[<model>], **params}), checked the same way
    every_model = [
        ({"max_epochs": 0}, "unet_lgg: params.max_epochs: expected an integer >= 1, found 0"),
        ({"unet_lgg": {"max_epochs": 2}, "max_epochs": "2"}, "unet_lgg: params.max_epochs: expected an integer"),
        ({"unet_lgg": {"max_epochs": 2}, "deepigeos_brats": {"stage": "cnet"}}, "params.deepigeos_brats.stage"),
        ({"igs_brats": {"max_epochs": -1}}, "igs_brats: params.igs_brats.max_epochs: expected an integer >= 1"),
        ({"unet_lgg": 3}, "params.unet_lgg: expected a JSON object of its train params, found 3"),
        ({"model": "unet_lgg"}, "params.model: expected none in POST /train/"),
        ({}, "expected images with a final label in the datastore"),  # no model has a labelled image yet
    ]
    for params, text in every_model:
        r = requests.post(f"{served.url}/train/", params={"run_sync": False}, json=params, timeout=60)
        assert r.status_code == 400 and text in r.text, (params, r.status_code, r.text[:500])
    assert len(train_tasks(served)) == queued, "a refused request must not queue a train task"
    info = requests.get(f"{served.url}/info/", timeout=60).json()
    assert info["trainers"]["deepigeos_brats"]["config"] == {"max_epochs": 1, "stage": ["rnet", "pnet"]}
    assert info["trainers"]["unet_lgg"]["config"] == {"max_epochs": 1}
    assert set(info["trainers"]) == {"unet_lgg", "deepigeos_brats", "igs_brats", "resunet_zoom_atlas"}


def test_saved_labels_train_and_the_next_inference_uses_the_new_weights(served):
    brats = image_of(served, "deepigeos_brats")
    put_label(served, served.images["deepigeos_brats"], bright_label(brats), brats.affine)
    lgg = image_of(served, "unet_lgg")
    put_label(served, served.images["unet_lgg"], np.asarray(lgg.dataobj)[..., 1] > 0.7, lgg.affine)
    brats4 = image_of(served, "igs_brats")  # (H, W, D, 4): FLAIR first; a BraTS label 0/2/4 of its bright parts
    flair4 = np.asarray(brats4.dataobj)[..., 0]
    bright = np.percentile(flair4[flair4 > 0], [85, 95])
    put_label(
        served, served.images["igs_brats"], np.select([flair4 > bright[1], flair4 > bright[0]], [4, 2]), brats4.affine
    )
    # DeepIGeoS' automatic task serves P-Net + CRF-Net(f): its "pnet" stage fine-tunes them
    for bundle, stage in (("deepigeos_brats", {"stage": "pnet"}), ("unet_lgg", {}), ("igs_brats", {})):
        _, before = infer(served, bundle, served.images[bundle])
        weights = Path(before["weights"])
        old = _sha(weights)
        r = train(served, bundle, {"max_epochs": 1, **stage})
        assert r.status_code == 200, r.text[-3000:] + served.log.read_text()[-3000:]
        assert _sha(weights) != old, f"{bundle}: training did not replace the served weights"
        assert not list(weights.parent.glob(".train-*")), "the run's folder was left behind"
        _, after = infer(served, bundle, served.images[bundle])
        assert after["weights"] == before["weights"]
        assert after["weights_mtime_ns"] == weights.stat().st_mtime_ns != before["weights_mtime_ns"]
        stats = train_stats(served, bundle)
        assert stats["status"] == "DONE" and stats["info"]["weights"] == str(weights)


def test_training_progress_is_in_the_stats_while_and_after_the_run(served):
    """Six labelled LGG cases, trained in the background (MONAI Label's subprocess) for 4 epochs: ``/info/`` shows
    the epochs as they pass and, after the run, the losses, the validation metric and which images validated."""
    ids = sorted(p.name[: -len(".nii.gz")] for p in served.studies.glob("TCGA_*.nii.gz"))
    assert len(ids) == 6
    for i in ids:
        image = nib.load(served.studies / f"{i}.nii.gz")
        put_label(served, i, np.asarray(image.dataobj)[..., 1] > 0.7, image.affine)
    start = time.time()
    r = train(served, "unet_lgg", {"max_epochs": 4}, run_sync=False)
    assert r.status_code == 200 and r.json()["status"] == "SUBMITTED", r.text[:1000]
    task_id = r.json()["id"]
    seen = []  # the stats records of this run read while its task was running
    deadline = time.monotonic() + 900
    while time.monotonic() < deadline:
        task = next(t for t in train_tasks(served) if t["id"] == task_id)
        stats = train_stats(served, "unet_lgg")
        if stats.get("start_ts", 0) >= int(start) and task["status"] == "RUNNING":
            seen.append(stats)
        if task["status"] not in ("SUBMITTED", "RUNNING"):
            break
        time.sleep(0.3)
    assert task["status"] == "DONE", task
    running = [s for s in seen if s["status"] == "RUNNING"]
    assert running and all(s["total_epochs"] == 4 for s in running)
    assert {s["epoch"] for s in running} & {1, 2, 3}, f"no record between the epochs: {[s['epoch'] for s in seen]}"
    for s in running:  # a loss per finished epoch as the run goes; the total time once the last epoch has run
        assert len(s["train_loss"]) == s["epoch"] and ("total_time" in s) == (s["epoch"] == 4)
    stats = train_stats(served, "unet_lgg")
    assert stats["status"] == "DONE" and stats["epoch"] == stats["total_epochs"] == 4 and stats["total_time"]
    assert stats["start_ts"] <= stats["end_ts"]
    assert len(stats["train_loss"]) == 4 and all(math.isfinite(v) and v > 0 for v in stats["train_loss"])
    evaluation = stats["eval"]
    assert evaluation["key_metric_name"] in evaluation["metrics"]
    assert 0 <= stats["best_metric"] == evaluation["best_metric"] <= 1 and 1 <= evaluation["best_metric_epoch"] <= 4
    images = stats["info"]["images"]
    labelled = set(ids) | {served.images["unet_lgg"]}
    assert not set(images["training"]) & set(images["validation"]), "validation images must not train"
    assert set(images["training"]) | set(images["validation"]) == labelled and len(images["validation"]) == 1
    assert stats["info"]["note"] is None


def test_a_failed_training_run_leaves_the_served_weights_as_they_were(served):
    lgg = image_of(served, "unet_lgg")
    image = served.images["unet_lgg"]
    put_label(served, image, np.zeros(lgg.shape[:2] + (1,)), lgg.affine)  # wrong depth
    weights = served.bundles / "unet_lgg" / "models" / "model.pt"
    old = _sha(weights)
    r = train(served, "unet_lgg", {"max_epochs": 1})
    assert r.status_code >= 400
    assert _sha(weights) == old and not list(weights.parent.glob(".train-*"))
    stats = train_stats(served, "unet_lgg")
    assert stats["status"] == "ERROR" and "expected (S, S, D, 3) and (S, S, D)" in stats["error"]
    assert requests.get(f"{served.url}/info/", timeout=30).status_code == 200
    put_label(served, image, np.asarray(lgg.dataobj)[..., 1] > 0.7, lgg.affine)  # for the tests after this one


def test_a_stopped_training_run_says_stopped(served):
    """``DELETE /train/`` (3D Slicer's stop button) kills the run's process: its stats say ``STOPPED``, its folder is
    removed and the served weights stay as they were."""
    weights = served.bundles / "unet_lgg" / "models" / "model.pt"
    old = _sha(weights)
    start = time.time()
    r = train(served, "unet_lgg", {"max_epochs": 1000}, run_sync=False)
    assert r.status_code == 200, r.text[:1000]
    task_id = r.json()["id"]
    deadline = time.monotonic() + 300
    while (stats := train_stats(served, "unet_lgg")).get("status") != "RUNNING" or stats.get("start_ts", 0) < int(
        start
    ):
        assert time.monotonic() < deadline, f"the run did not start: {stats}"
        time.sleep(0.2)
    r = requests.delete(f"{served.url}/train/", timeout=120)
    assert r.status_code == 200 and (r.json()["id"], r.json()["status"]) == (task_id, "STOPPED"), r.text[:1000]
    stats = train_stats(served, "unet_lgg")
    assert stats["status"] == "STOPPED" and stats["start_ts"] <= stats["end_ts"] and stats["total_epochs"] == 1000
    assert _sha(weights) == old and not list(weights.parent.glob(".train-*"))
    assert next(t for t in train_tasks(served) if t["id"] == task_id)["status"] == "STOPPED"


def first_train_stats(served) -> str:
    """The model of the first ``train_stats`` of ``GET /info/``: the one 3D Slicer's module shows."""
    return next(iter(requests.get(f"{served.url}/info/", timeout=60).json()["train_stats"]))


def test_zoom_trains_on_the_t1w_images_only(served):
    atlas, brats = image_of(served, "resunet_zoom_atlas"), image_of(served, "deepigeos_brats")
    put_label(served, served.images["resunet_zoom_atlas"], bright_label(atlas, 97), atlas.affine)
    put_label(served, served.images["deepigeos_brats"], bright_label(brats), brats.affine)  # a FLAIR: not the zoom's
    weights = served.bundles / "resunet_zoom_atlas" / "models" / "model.pt"
    _, before = infer(served, "resunet_zoom_atlas", served.images["resunet_zoom_atlas"])
    old = _sha(weights)
    r = train(served, "resunet_zoom_atlas", {"max_epochs": 1})
    assert r.status_code == 200, r.text[-3000:] + served.log.read_text()[-3000:]
    assert _sha(weights) != old
    _, after = infer(served, "resunet_zoom_atlas", served.images["resunet_zoom_atlas"])
    assert after["weights_mtime_ns"] == weights.stat().st_mtime_ns != before["weights_mtime_ns"]
    stats = train_stats(served, "resunet_zoom_atlas")
    assert first_train_stats(served) == "resunet_zoom_atlas"  # the last of the trainers, trained last
    atlas_id = served.images["resunet_zoom_atlas"]
    assert stats["info"]["stage"] == "zoom_in" and stats["info"]["weights"] == str(weights)
    assert stats["info"]["images"] == {"training": [atlas_id], "validation": [atlas_id]}
    assert "one labelled image" in stats["info"]["note"]
    assert stats["epoch"] == 1 and len(stats["train_loss"]) == 1


def test_deepigeos_rnet_training_is_served_by_the_refinement(served):
    """The default stage fine-tunes R-Net + CRF-Net(fu) (the refinement's weights) on the saved label, with the
    bundle's simulated clicks on the served P-Net + CRF-Net(f)'s label; the refinement then loads the new weights
    (its result names the file and the modification time it loaded) and answers as the bundle's ``refine`` with
    them, computed here. (The tiny R-Net copies the label it is given, before and after: the labels alone cannot
    tell the weights apart.)"""
    image_id = served.images["deepigeos_brats"]
    brats = image_of(served, "deepigeos_brats")
    put_label(served, image_id, bright_label(brats), brats.affine)
    model = BundleModel(
        BUNDLES["deepigeos_brats"],
        served.bundles / "deepigeos_brats",
        served.extra["deepigeos_brats"],
        torch.device("cpu"),
    )
    weights = Path(model.parser().get_parsed_content("refine_weights"))
    path = served.studies / f"{image_id}.nii.gz"
    image = LoadImage(ensure_channel_first=True, image_only=True)(path)
    auto, _ = infer(served, "deepigeos_brats", image_id)
    flair = np.asarray(brats.dataobj)
    click = [int(v) for v in np.unravel_index(np.argmax(flair), flair.shape)]  # the brightest voxel: in the brain

    def refined(label_image: nib.Nifti1Image) -> np.ndarray:
        label = torch.as_tensor(np.asarray(label_image.dataobj)).to(torch.uint8)
        refine = model.parser().get_parsed_content("refine")  # with the weights file as it is now
        return np.asarray(refine(image=image, label=label, foreground=[click], background=[]))

    def served_refinement() -> tuple[np.ndarray, dict]:
        label, result = infer(served, "deepigeos_brats_refine", image_id, {"reset": True, "foreground": [click]})
        assert result["weights"] == str(weights) and result["weights_mtime_ns"] == weights.stat().st_mtime_ns
        return np.asarray(label.dataobj), result

    label, before = served_refinement()
    np.testing.assert_array_equal(label, refined(auto))
    old = _sha(weights)
    r = train(served, "deepigeos_brats", {"max_epochs": 2})
    assert r.status_code == 200, r.text[-3000:] + served.log.read_text()[-3000:]
    assert _sha(weights) != old, "the R-Net training did not replace the refinement's weights"
    stats = train_stats(served, "deepigeos_brats")
    assert first_train_stats(served) == "deepigeos_brats"
    assert stats["info"]["stage"] == "rnet" and stats["info"]["weights"] == str(weights)
    assert stats["info"]["images"]["training"] == [image_id] and len(stats["train_loss"]) == 2
    label, after = served_refinement()  # the file's new modification time: reloaded
    assert after["weights_mtime_ns"] != before["weights_mtime_ns"]
    np.testing.assert_array_equal(label, refined(auto))


def test_igs_brats_classification_gives_slice_probabilities_of_the_network(served):
    image_id = served.images["igs_brats"]
    r = requests.post(
        f"{served.url}/infer/igs_brats_classification",
        params={"image": image_id, "output": "json"},
        data={"params": "{}"},
        timeout=300,
    )
    assert r.status_code == 200, r.text[:2000]
    result = r.json()
    depth = image_of(served, "igs_brats").shape[2]
    p = np.asarray(result["p_tumour"])
    assert result["class_names"] == ["no_tumour", "tumour"] and p.shape == (depth,)
    assert np.all((p >= 0) & (p <= 1))
    np.testing.assert_allclose(p + np.asarray(result["p_no_tumour"]), 1, atol=1e-5)
    assert result["prediction"] == ["tumour" if v > 0.5 else "no_tumour" for v in p]
    # the bundle's classifier applied here to each slice of the same preprocessed (undersampled) input
    model = BundleModel(
        BUNDLES["igs_brats"], served.bundles / "igs_brats", served.extra["igs_brats"], torch.device("cpu")
    ).for_task("classification")
    pre, _, _ = model.transforms()
    x = pre({"image": str(served.studies / f"{image_id}.nii.gz")})["image"]
    classifier = model.network().net
    with torch.no_grad():
        expected = [torch.softmax(classifier(x[None, ..., k].float()), 1)[0, 1].item() for k in range(depth)]
    np.testing.assert_allclose(p, expected, atol=1e-5)
    info = requests.get(f"{served.url}/info/", timeout=60).json()["models"]
    assert info["igs_brats_classification"]["type"] == "classification"
    assert info["igs_brats_reconstruction"]["type"] == "others"


def test_igs_brats_reconstruction_is_an_image_on_the_input_grid(served):
    image = image_of(served, "igs_brats")
    volume, result = infer(served, "igs_brats_reconstruction", served.images["igs_brats"], {"acceleration": 4})
    assert result["modalities"] == ["flair", "t1", "t1ce", "t2"]
    assert volume.shape == image.shape and volume.get_data_dtype() == np.float32
    np.testing.assert_allclose(volume.affine, image.affine, atol=1e-4)
    data = np.asarray(volume.dataobj)
    assert np.all((data >= 0) & (data <= 1)) and data.std() > 0
