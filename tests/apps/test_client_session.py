"""The app as 3D Slicer uses it, through MONAI Label's own client (``MONAILabelClient``) against a real
``monailabel start_server`` on the tiny trained bundles: info, next sample, automatic segmentation, DeepIGeoS clicks
with the refinement state of each user and image, session volumes, uploaded labels, saved labels; concurrent users;
malformed requests (a seeded fuzz); the bounded refinement cache; the server answering during an inference. The
checks of :mod:`apps.monailabel.lib.state` alone run without a server."""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import requests
import torch
from monai.bundle import ConfigParser
from monailabel.client import MONAILabelClient
from monailabel.client.client import MONAILabelClientException

from apps.monailabel.lib.bundles import BUNDLES, BadRequest, BundleModel
from apps.monailabel.lib.server import monailabel_command, start_server, stop_server
from apps.monailabel.lib.state import LRUCache, RefinementState, disjoint, parse_clicks

REFINE = "deepigeos_brats_refine"
REPO = Path(__file__).resolve().parents[2]


def test_the_readme_starts_the_server_as_the_tests_do():
    """The README's server command runs MONAI Label with the environment's interpreter (no activated venv needed);
    every server of these tests is started that way, with the environment's folder removed from the PATH."""
    readme = (REPO / "README.md").read_text()
    commands = [line.strip() for line in readme.splitlines() if "start_server" in line and "--app" in line]
    assert commands and all(
        c.startswith(".venv/bin/python -m monailabel.main start_server --app apps/monailabel") for c in commands
    )
    cmd = monailabel_command()
    assert cmd[1:] == ["-m", "monailabel.main"] and Path(cmd[0]).parent.name == "bin"


def test_lru_cache_evicts_the_least_recently_used_past_either_bound():
    cache = LRUCache(max_entries=3, max_bytes=100)
    for key in "abc":
        cache.put(key, key.upper(), 10)
    assert cache.get("a") == "A"  # now the most recently used: b goes first
    cache.put("d", "D", 10)
    assert cache.get("b") is None and [cache.get(k) for k in "acd"] == ["A", "C", "D"]
    cache.put("e", "E", 75)  # 105 bytes with a, c, d, e: the least recently used (a) goes
    assert cache.get("a") is None and cache.stats() == {"entries": 3, "bytes": 95, "max_entries": 3, "max_bytes": 100}
    cache.put("f", "F", 500)  # alone over max_bytes: kept (the request that made it uses it), every other one goes
    assert cache.stats()["entries"] == 1 and cache.get("f") == "F"
    cache.put("f", "F2", 5)  # put again: replaced, counted once
    assert cache.stats()["bytes"] == 5 and cache.get("f") == "F2"
    with pytest.raises(ValueError, match="max_entries: expected an integer >= 1, found 0"):
        LRUCache(0, 1)


def test_parse_clicks_checks_json_integers_inside_the_image_without_overflow():
    assert parse_clicks([[1, 2, 3], [0, 0, 0], [1, 2, 3]], "foreground", (4, 4, 4)) == [(1, 2, 3), (0, 0, 0)]
    assert parse_clicks(None, "background", (4, 4, 4)) == []
    for points, expected in [
        ([[2**70, 1, 1]], r"params.foreground: expected voxel indices inside the image \(4, 4, 4\), found \[\["),
        ([[-1, 1, 1]], r"params.foreground: expected voxel indices inside the image"),
        ([[1.0, 1, 1]], r"params.foreground: expected voxel indices \[\[i, j, k\], \.\.\.\] of a 3D image, found"),
        ([[True, 1, 1]], r"params.foreground: expected voxel indices \[\[i, j, k\], \.\.\.\]"),
        ([[1, 1]], r"params.foreground: expected voxel indices"),
        ("centre", r"params.foreground: expected voxel indices"),
    ]:
        with pytest.raises(BadRequest, match=expected):
            parse_clicks(points, "foreground", (4, 4, 4))


def test_refinement_state_merges_every_click_so_far_or_only_the_new_ones():
    start = torch.zeros(4, 4, 4, dtype=torch.uint8)
    slicer, other = RefinementState.starting(start, "automatic"), RefinementState.starting(start, "automatic")
    assert slicer.nbytes == 64 and slicer.label is start
    # a client that sends every click so far and one that sends only the new ones: the same clicks, the same new ones
    assert slicer.add([(1, 1, 1)], []) == other.add([(1, 1, 1)], []) == ([(1, 1, 1)], [], [], [])
    assert slicer.add([(1, 1, 1)], [(2, 2, 2)]) == other.add([], [(2, 2, 2)]) == ([], [(2, 2, 2)], [], [])
    assert (slicer.foreground, slicer.background) == (other.foreground, other.background) == ([(1, 1, 1)], [(2, 2, 2)])
    # a background click sent as foreground changes kind
    assert slicer.add([(2, 2, 2)], []) == ([(2, 2, 2)], [], [], [(2, 2, 2)])
    assert (slicer.foreground, slicer.background) == ([(1, 1, 1), (2, 2, 2)], [])


def test_refinement_state_with_every_click_sent_drops_the_deleted_ones():
    state = RefinementState.starting(torch.zeros(4, 4, 4, dtype=torch.uint8), "automatic")
    state.add([(1, 1, 1), (3, 3, 3)], [(2, 2, 2)], every=True)
    # 3D Slicer sends all its points: (3, 3, 3) and (2, 2, 2) were deleted, (0, 0, 0) is new
    changes = state.add([(1, 1, 1)], [(0, 0, 0)], every=True)
    assert changes == ([], [(0, 0, 0)], [(3, 3, 3)], [(2, 2, 2)])
    assert (changes.dropped_foreground, changes.dropped_background) == ([(3, 3, 3)], [(2, 2, 2)])
    assert (state.foreground, state.background) == ([(1, 1, 1)], [(0, 0, 0)])
    assert state.add([], [], every=True) == ([], [], [(1, 1, 1)], [(0, 0, 0)])  # every point deleted
    assert (state.foreground, state.background) == ([], [])
    with pytest.raises(BadRequest, match=r"found voxel \[3, 0, 1\] of the image in both the foreground and the"):
        disjoint([(1, 1, 1), (3, 0, 1)], [(3, 0, 1)])


def test_a_bundle_without_weights_names_the_training_runs_that_write_them(tmp_path):
    """The app's log line for a bundle it skips names the runs that write the served weights: for DeepIGeoS
    ``pnet_crf.pt``, P-Net (``train.json``) and then P-Net + CRF-Net(f) (``train.json`` + ``train_pnet_crf.json``);
    the last run's ``ckpt_path`` is the file the automatic task loads, for every bundle."""
    for name, entry in BUNDLES.items():
        root = tmp_path / name  # the configs alone: no weights file (the zoom bundle serves zoom-out when it exists)
        shutil.copytree(REPO / "bundles" / name / "configs", root / "configs")
        model = BundleModel(entry, root, [], torch.device("cpu"))
        parser = ConfigParser()
        parser.read_config([str(root / "configs" / c) for c in entry.weights_runs[-1]])
        parser.read_meta(model.metadata)
        parser.update({"bundle_root": str(root), **entry.overrides})
        assert Path(parser.get_parsed_content("ckpt_path")) == model.weights(), name
    (tmp_path / "tiny.json").write_text("{}")  # the app's extra configs (the served weights' settings) come last
    model = BundleModel(
        BUNDLES["deepigeos_brats"], tmp_path / "deepigeos_brats", [str(tmp_path / "tiny.json")], torch.device("cpu")
    )
    configs, tiny = tmp_path / "deepigeos_brats" / "configs", tmp_path / "tiny.json"
    assert model.weights().name == "pnet_crf.pt"
    run = "python -m monai.bundle run training --config_file"
    assert model.train_commands() == (
        f"{run} \"['{configs}/train.json', '{tiny}']\", then "
        f"{run} \"['{configs}/train.json', '{configs}/train_pnet_crf.json', '{tiny}']\""
    )


def _array(path: str | Path) -> np.ndarray:
    return np.asarray(nib.load(str(path)).dataobj)


def _hash(path: str | Path) -> str:
    """The label's voxels and shape (the NIfTI files differ in their gzip headers)."""
    label = _array(path).astype(np.uint8)
    return hashlib.sha1(label.tobytes() + str(label.shape).encode()).hexdigest()


@pytest.fixture(scope="module")
def brats(served) -> dict:
    """The DeepIGeoS case of the served datastore: its id, file, and three clicks in its brain (the brain crop):
    near the centre, the farthest from it, and one between."""
    image = served.images["deepigeos_brats"]
    path = served.studies / f"{image}.nii.gz"
    brain = np.argwhere(_array(path) > 0)
    centre = brain[np.abs(brain - brain.mean(0)).sum(1).argmin()]
    far = brain[np.abs(brain - centre).sum(1).argmax()]
    mid = brain[np.abs(brain - (centre + far) / 2).sum(1).argmin()]
    return {"id": image, "path": path, "clicks": [centre.tolist(), far.tolist(), mid.tolist()]}


def _client(served, tmp_path: Path, user: str) -> MONAILabelClient:
    folder = tmp_path / user
    folder.mkdir()
    return MONAILabelClient(served.url, tmpdir=str(folder), client_id=user)


@pytest.mark.slow
def test_a_3d_slicer_session(served, brats, tmp_path):
    client = _client(served, tmp_path, "slicer-user")
    c1, c2, _ = brats["clicks"]
    info = client.info()
    assert info["models"][REFINE]["type"] == "deepgrow" and {"random", "first"} <= set(info["strategies"])
    client.upload_image(str(brats["path"]), image_id="slicer_case")
    assert "slicer_case" in client.datastore()["objects"]
    assert client.next_sample("first", {})["id"] in client.datastore()["objects"]

    auto, result = client.infer("deepigeos_brats", "slicer_case", {})
    assert _array(auto).shape == nib.load(brats["path"]).shape and result["weights"].endswith(".pt")
    label, result = client.infer(REFINE, "slicer_case", {"foreground": [], "background": [], "reset_state": True})
    assert (result["start"], result["state"], result["user"]) == ("automatic", "new", "slicer-user")
    assert _hash(label) == _hash(auto)
    label, result = client.infer(REFINE, "slicer_case", {"foreground": [c1], "background": []})
    assert result["state"] == "kept" and result["refine_from"] == "initial" and _array(label)[tuple(c1)] == 1
    label, result = client.infer(REFINE, "slicer_case", {"foreground": [c1], "background": [c2]})  # every click
    assert result["clicks"] == {"foreground": 1, "background": 1}
    assert result["new_clicks"] == {"foreground": 0, "background": 1}
    assert _array(label)[tuple(c1)] == 1 and _array(label)[tuple(c2)] == 0
    client.save_label("slicer_case", label, tag="final")
    assert "final" in client.datastore()["objects"]["slicer_case"]["labels"]
    again, result = client.infer(REFINE, "slicer_case", {"foreground": [], "background": [], "reset_state": True})
    assert result["state"] == "new" and _hash(again) == _hash(auto)

    session_id = client.create_session(str(brats["path"]))["session_id"]  # a volume not in the datastore
    label, result = client.infer(REFINE, "", {"foreground": [c1]}, session_id=session_id)
    assert result["image"] == f"session:{session_id}" and result["user"] == "slicer-user"
    assert _array(label)[tuple(c1)] == 1
    auto_session, _ = client.infer("deepigeos_brats", "", {}, session_id=session_id)
    assert _hash(auto_session) == _hash(auto)
    client.remove_session(session_id)
    with pytest.raises(MONAILabelClientException, match="Status: 404.*session_id: expected a live session"):
        client.infer(REFINE, "", {"foreground": [c1]}, session_id=session_id)


def _run(client: MONAILabelClient, image: str, steps: list[dict], label_in: str | None = None) -> list[str]:
    """One user's requests in order -> the hashes of the labels returned."""
    return [_hash(client.infer(REFINE, image, params, label_in=label_in)[0]) for params in steps]


@pytest.mark.slow
def test_two_users_clicking_on_one_image_at_once_get_their_solo_labels(served, brats, tmp_path):
    c1, c2, c3 = brats["clicks"]
    steps = {
        "a": [{"foreground": [c1], "reset_state": True}, {"foreground": [c1], "background": [c2]}],
        "b": [{"background": [c3], "reset_state": True}, {"foreground": [c2], "background": [c3]}],
    }
    solo = {u: _run(_client(served, tmp_path, f"solo-{u}"), brats["id"], s) for u, s in steps.items()}
    with ThreadPoolExecutor(2) as pool:
        jobs = {u: pool.submit(_run, _client(served, tmp_path, f"both-{u}"), brats["id"], s) for u, s in steps.items()}
        both = {u: job.result() for u, job in jobs.items()}
    assert both == solo and solo["a"][-1] != solo["b"][-1]


@pytest.mark.slow
def test_clicks_so_far_previous_labels_and_uploaded_labels(served, brats, tmp_path):
    """``initial``: every click so far, whether a client sends them all or only the new ones; ``previous``: the
    latest label with the new clicks, which is what an uploaded start label with those clicks gives."""
    c1, c2, c3 = brats["clicks"]
    image = brats["id"]
    every_click = _run(_client(served, tmp_path, "every"), image, [{"foreground": [c1]}, {"foreground": [c1, c3]}])
    new_only = _run(_client(served, tmp_path, "new-only"), image, [{"foreground": [c1]}, {"foreground": [c3]}])
    at_once = _run(_client(served, tmp_path, "at-once"), image, [{"foreground": [c1, c3]}])
    assert every_click[-1] == new_only[-1] == at_once[-1]

    previous = _client(served, tmp_path, "previous")
    first, _ = previous.infer(REFINE, image, {"foreground": [c1], "refine_from": "previous"})
    second, result = previous.infer(REFINE, image, {"foreground": [c1], "background": [c2], "refine_from": "previous"})
    assert result["new_clicks"] == {"foreground": 0, "background": 1}
    uploader = _client(served, tmp_path, "uploader")
    label, result = uploader.infer(REFINE, image, {"background": [c2]}, label_in=first)
    assert (result["start"], result["state"], result["clicks"]) == (
        "uploaded",
        "new",
        {"foreground": 0, "background": 1},
    )
    assert _hash(label) == _hash(second)

    drawn = np.zeros(nib.load(brats["path"]).shape, np.uint8)  # a label drawn by the user, no click: as it is
    drawn[tuple(slice(c - 2, c + 3) for c in c1)] = 1
    nib.save(nib.Nifti1Image(drawn, nib.load(brats["path"]).affine), tmp_path / "drawn.nii.gz")
    label, result = uploader.infer(REFINE, image, {}, label_in=str(tmp_path / "drawn.nii.gz"))
    assert result["start"] == "uploaded" and np.array_equal(_array(label), drawn)


@pytest.mark.slow
def test_the_first_click_starts_from_the_automatic_label_just_made(served, brats, tmp_path):
    """The refinement's start label is the automatic task's label of the same image when the automatic weights are
    the same: the first click runs no second segmentation (the automatic task's run counter), and its label is the
    one a refinement that segments the image itself gives."""
    c1 = brats["clicks"][0]
    client = _client(served, tmp_path, "auto-then-click")
    auto, result = client.infer("deepigeos_brats", brats["id"], {})
    runs, weights = result["runs"], Path(result["weights"])
    label, result = client.infer(REFINE, brats["id"], {"foreground": [c1], "reset_state": True})
    assert (result["start"], result["automatic_label"], result["automatic_runs"]) == ("automatic", "shared", runs)
    kept, result = client.infer(REFINE, brats["id"], {"foreground": [c1]})  # a kept state starts nothing
    assert (result["state"], result["automatic_label"], result["automatic_runs"]) == ("kept", None, runs)
    # the automatic weights reloaded (their file's modification time changed): the kept label is not reused
    stat = weights.stat()
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    again, result = _client(served, tmp_path, "segments-itself").infer(REFINE, brats["id"], {"foreground": [c1]})
    assert (result["automatic_label"], result["automatic_runs"]) == ("computed", runs + 1)
    assert _hash(again) == _hash(label) == _hash(kept)
    _, result = _client(served, tmp_path, "after-it").infer(REFINE, brats["id"], {"foreground": [c1]})
    assert (result["automatic_label"], result["automatic_runs"]) == ("shared", runs + 1)
    empty, _ = client.infer(REFINE, brats["id"], {"reset_state": True})
    assert _hash(empty) == _hash(auto)


@pytest.mark.slow
def test_a_client_sending_every_click_deletes_points(served, brats, tmp_path):
    """``all_clicks`` (in the model's config, which 3D Slicer sends with every request): the request holds every
    click so far, so a point the user deleted is dropped; a request without it merges (the test above)."""
    c1, c2, c3 = brats["clicks"]
    image = brats["id"]
    slicer = _client(served, tmp_path, "deletes")
    assert slicer.info()["models"][REFINE]["config"]["all_clicks"] is True
    slicer.infer(REFINE, image, {"foreground": [c1, c3], "background": [c2], "all_clicks": True, "reset_state": True})
    label, result = slicer.infer(REFINE, image, {"foreground": [c1], "background": [], "all_clicks": True})
    assert result["clicks"] == {"foreground": 1, "background": 0}
    assert result["dropped_clicks"] == {"foreground": 1, "background": 1}
    assert _hash(label) == _run(_client(served, tmp_path, "c1-only"), image, [{"foreground": [c1]}])[-1]
    label, result = slicer.infer(REFINE, image, {"foreground": [], "background": [], "all_clicks": True})
    assert result["clicks"] == {"foreground": 0, "background": 0} and result["dropped_clicks"]["foreground"] == 1
    assert _hash(label) == _hash(slicer.infer("deepigeos_brats", image, {})[0])  # no click left: the start label


def _malformed(rng: random.Random, image: str, shape: tuple[int, ...], voxel: list[int]) -> tuple[str, dict]:
    """A random malformed ``POST /infer`` -> (the field its answer must name, ``requests.post`` keyword arguments)."""
    query = {"image": image}
    bad_clicks = [
        [[2**70, 1, 1]],
        [[-1 - rng.randrange(1000), 0, 0]],
        [[shape[0] + rng.randrange(1000), 0, 0]],
        [[1.5, 2, 3]],
        [[True, 1, 1]],
        [[None, 1, 1]],
        [["1", "2", "3"]],
        [[1, 2]],
        [[1, 2, 3, 4]],
        [voxel, "x"],
        "centre",
        7,
        {"i": 1},
        [[[1, 2, 3]]],
    ]
    not_json = [
        "{",
        "[1, 2",
        "{'foreground': []}",
        "}{",
        "nan?",
        '{"foreground": [[1, 2, 3]]',
        "".join(rng.choice("{}[]:,\"'ab12 ") for _ in range(rng.randrange(1, 30))),
    ]
    kind = rng.randrange(12)
    if kind == 0:
        key = rng.choice(["foreground", "background"])
        return key, {"params": query, "data": {"params": json.dumps({key: rng.choice(bad_clicks)})}}
    if kind == 1:
        text = rng.choice(not_json)
        text = text if text.strip() and not _is_json(text) else "{"
        return "params", {"params": query, "data": {"params": text}}
    if kind == 2:
        return "params", {"params": query, "data": {"params": json.dumps(rng.choice([[], 3, "s", None, True, [{}]]))}}
    if kind == 3:
        key = rng.choice(["reset_state", "reset"])
        return key, {"params": query, "data": {"params": json.dumps({key: rng.choice(["yes", 1, 0, None, [], {}])})}}
    if kind == 4:
        value = rng.choice(["latest", "", 1, None, ["initial"], "INITIAL"])
        return "refine_from", {"params": query, "data": {"params": json.dumps({"refine_from": value})}}
    if kind == 5:
        value = rng.choice([5, True, [], {"id": 1}, 1.5])
        return "client_id", {"params": query, "data": {"params": json.dumps({"client_id": value})}}
    if kind == 6:
        value = rng.choice(["", f"no_such_{rng.randrange(10**6)}", "/etc/passwd", "../studies/x", "%00"])
        return "image", {"params": {"image": value}, "data": {"params": json.dumps({"foreground": [voxel]})}}
    if kind == 7:
        value = rng.choice([5, ["a"], {"a": 1}, "/etc/hostname"])
        return "image", {"params": {"image": ""}, "data": {"params": json.dumps({"image": value})}}
    if kind == 8:
        return "session_id", {"params": {**query, "session_id": str(uuid.UUID(int=rng.getrandbits(128)))}}
    if kind == 9:
        both = {"foreground": [voxel], "background": [[0, 0, 0], voxel]}
        return "params.foreground, params.background", {"params": query, "data": {"params": json.dumps(both)}}
    if kind == 10:
        label = rng.choice(
            [
                bytes(rng.randrange(256) for _ in range(rng.randrange(1, 400))),
                nib.Nifti1Image(np.zeros((shape[0] + 1, *shape[1:]), np.uint8), np.eye(4)).to_bytes(),
                nib.Nifti1Image(np.full(shape, 2, np.uint8), np.eye(4)).to_bytes(),
            ]
        )
        return "label", {"params": query, "files": {"label": ("label.nii", label)}, "data": {"params": "{}"}}
    garbage = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 400)))
    files = {"file": (rng.choice(["x.nii", "x.nii.gz", "x.nrrd"]), garbage)}
    return "file", {"params": {"image": ""}, "files": files, "data": {"params": "{}"}}


def _is_json(text: str) -> bool:
    try:
        json.loads(text)
    except json.JSONDecodeError:
        return False
    return True


@pytest.mark.slow
def test_malformed_requests_get_a_4xx_naming_the_field(served, brats):
    rng = random.Random(23)
    shape = nib.load(brats["path"]).shape
    answers = []
    for _ in range(60):
        field, kwargs = _malformed(rng, brats["id"], shape, brats["clicks"][0])
        automatic = field in ("params", "image", "session_id", "file") and rng.random() < 0.3  # its params unread
        model = "deepigeos_brats" if automatic else REFINE
        r = requests.post(f"{served.url}/infer/{model}", timeout=300, **kwargs)
        answers.append((r.status_code, field, r.text[:300]))
    print(f"\nfuzz: {len(answers)} malformed requests, codes {sorted({a[0] for a in answers})}")
    assert [a for a in answers if not 400 <= a[0] < 500 or a[1] not in a[2]] == []
    r = requests.post(f"{served.url}/infer/{REFINE}", params={"image": brats["id"], "output": "dicom"}, timeout=60)
    assert r.status_code == 422 and "output" in r.text
    r = requests.post(f"{served.url}/infer/no_such_model", params={"image": brats["id"]}, timeout=60)
    assert r.status_code == 404 and "infer model: expected one of" in r.text
    assert requests.get(f"{served.url}/info/", timeout=30).status_code == 200


@pytest.mark.slow
def test_the_server_answers_info_during_a_long_inference(served, brats, tmp_path):
    image = nib.load(brats["path"])
    big = np.repeat(np.repeat(np.repeat(np.asarray(image.dataobj), 5, 0), 5, 1), 5, 2)  # 125x the voxels
    nib.save(nib.Nifti1Image(big, image.affine), tmp_path / "big.nii")
    latencies: list[float] = []
    codes: list[int] = []
    done = threading.Event()

    def poll() -> None:
        while not done.wait(0.1):
            t0 = time.perf_counter()
            codes.append(requests.get(f"{served.url}/info/", timeout=120).status_code)
            latencies.append(time.perf_counter() - t0)

    poller = threading.Thread(target=poll)
    poller.start()
    t0 = time.perf_counter()
    with open(tmp_path / "big.nii", "rb") as f:
        r = requests.post(
            f"{served.url}/infer/deepigeos_brats",
            params={"output": "json"},
            files={"file": ("big.nii", f)},
            timeout=600,
        )
    seconds = time.perf_counter() - t0
    done.set()
    poller.join()
    print(f"\n/info/ during a {seconds:.1f} s inference: {len(latencies)} answers, max {max(latencies):.3f} s")
    assert r.status_code == 200, r.text[:1000]
    # a blocked event loop answers once or twice, the first after most of the inference
    assert set(codes) == {200} and len(latencies) >= 3 and max(latencies) < seconds / 2


@pytest.fixture(scope="module")
def small_cache(deepigeos_staged, served, tmp_path_factory):
    """DeepIGeoS served with a refinement cache of 3 entries, on a datastore of its own."""
    tmp = tmp_path_factory.mktemp("small_cache")
    (tmp / "studies").mkdir()
    conf = {
        "bundles_dir": str(deepigeos_staged.tmp),
        "bundles": "deepigeos_brats",
        "device": "cpu",
        "extra_configs": {"deepigeos_brats": [str(deepigeos_staged.tmp / "tiny.json")]},
        "refine_cache_entries": "3",
    }
    url, proc = start_server(tmp / "studies", conf, tmp / "server.log")
    yield url, proc
    stop_server(proc)


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise ValueError(f"/proc/{pid}/status: expected a VmRSS line, found none")


@pytest.mark.slow
def test_the_refinement_cache_stays_bounded_over_uploads(small_cache, brats, tmp_path):
    url, proc = small_cache
    image = nib.load(brats["path"])
    flair = np.asarray(image.dataobj).astype(np.float32)
    rng = np.random.default_rng(0)
    results, rss = [], []
    for k in range(8):  # every upload a new image for the server: its content hash differs
        nib.save(
            nib.Nifti1Image(np.where(flair > 0, flair + rng.normal(0, 1, flair.shape), 0), image.affine),
            tmp_path / f"u{k}.nii",
        )
        with open(tmp_path / f"u{k}.nii", "rb") as f:
            r = requests.post(
                f"{url}/infer/{REFINE}",
                params={"output": "json"},
                data={"params": json.dumps({"foreground": [brats["clicks"][0]]})},
                files={"file": ("upload.nii", f)},
                timeout=300,
            )
        assert r.status_code == 200, r.text[:1000]
        results.append(r.json())
        rss.append(_rss_mib(proc.pid))
    print(f"\nsmall cache: entries {[x['cache']['entries'] for x in results]}, RSS MiB {[round(m) for m in rss]}")
    assert all(x["state"] == "new" and x["cache"]["entries"] <= 3 for x in results)
    assert len({x["image"] for x in results}) == 8
    assert results[-1]["cache"]["entries"] == 3 and results[-1]["cache"]["bytes"] <= results[-1]["cache"]["max_bytes"]

    def again(k: int) -> dict:
        with open(tmp_path / f"u{k}.nii", "rb") as f:
            return requests.post(
                f"{url}/infer/{REFINE}", params={"output": "json"}, files={"file": ("again.nii", f)}, timeout=300
            ).json()

    assert again(7)["state"] == "kept"  # the latest upload's state is still there (same content, new path)
    assert again(0)["state"] == "new"  # the first one's was evicted
