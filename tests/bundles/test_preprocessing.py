"""One preprocessing path: what the network sees in training equals what it sees at inference, for the same slice.

Training reads slices through the loaders (``common.data``) and applies ``train#deterministic_transforms``; inference
builds its input from ``inference.json`` (``dataset`` with its ``preprocessing``, then the ``inferer``). Both are
built from the bundle's own configs with ``ConfigParser`` on a tiny synthetic copy written by ``common.synthetic``, and
the inference side is run through its ``SliceInferer`` with an identity network, so what is compared is the network
input slice by slice.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from monai.bundle import ConfigParser
from monai.transforms import Compose

from common.apps.igs import case_slices
from common.data import acdc_frames, acdc_slices, brats_datalist, lgg_slices
from common.synthetic.acdc import write_synthetic_acdc
from common.synthetic.brats import TRAINING_FOLDERS, write_synthetic_brats
from common.synthetic.lgg import write_synthetic_lgg
from tests.bundles.conftest import REPO

SIZE = 40  # tiny and not a power of two: a resize or padding slip shows


def _parser(bundle: str, config: str, data: Path, **overrides: object) -> ConfigParser:
    parser = ConfigParser()
    parser.read_config(str(REPO / "bundles" / bundle / "configs" / config))
    parser["bundle_root"] = str(REPO / "bundles" / bundle)
    parser["dataset_dir"] = str(data)
    parser["image_size"] = SIZE
    for key, value in overrides.items():
        parser[key] = value
    return parser


def _network_inputs(bundle: str, data: Path, **overrides: object) -> list[tuple[str, torch.Tensor]]:
    """(volume name, ``(C, H, W, D)`` network input) per item of inference.json's dataset, through its inferer."""
    parser = _parser(bundle, "inference.json", data, **overrides)
    dataset, inferer = parser.get_parsed_content("dataset"), parser.get_parsed_content("inferer")
    out = []
    for k in range(len(dataset)):
        item = dataset[k]
        image = torch.as_tensor(item["image"]).float()[None]  # (1, C, H, W, D), as the DataLoader batches it
        seen = inferer(image, torch.nn.Identity())  # the identity network returns exactly what it was given
        assert seen.shape == image.shape
        name = item["patient"] if "patient" in item else Path(item["image"].meta["filename_or_obj"]).name
        out.append((name, seen[0]))
    return out


def _training_inputs(bundle: str, data: Path, items: list[dict]) -> list[dict]:
    """``items`` (loader slice dicts) through ``train#deterministic_transforms`` of train.json."""
    transform = Compose(_parser(bundle, "train.json", data).get_parsed_content("train#deterministic_transforms"))
    return [transform(dict(d)) for d in items]


def _acdc_pairs(tmp: Path) -> list[tuple[str, torch.Tensor, torch.Tensor]]:
    data = write_synthetic_acdc(tmp, n_training=1, n_testing=2, seed=1)
    train = _training_inputs("igs_acdc", data, acdc_slices(data, "test", spatial_size=SIZE))
    phase = {f.image.name: (f.patient, f.phase) for f in acdc_frames(data, "test")}
    by_key = {(d["patient"], d["phase"], d["slice"]): d["image"] for d in train}
    pairs = []
    for name, volume in _network_inputs("igs_acdc", data, pattern="full"):  # training sees full sampling
        patient, ph = phase[name]
        for s in range(volume.shape[-1]):
            pairs.append((f"{name}[{s}]", by_key.pop((patient, ph, s)), volume[..., s]))
    assert not by_key, f"training slices with no inference counterpart: {sorted(by_key)[:5]}"
    return pairs


def _lgg_pairs(tmp: Path) -> list[tuple[str, torch.Tensor, torch.Tensor]]:
    data = write_synthetic_lgg(tmp, n_patients=2, seed=1, size=SIZE, slices=(3, 5))
    train = _training_inputs("unet_lgg", data, lgg_slices(data, "all", image_size=SIZE))
    by_key = {(d["patient"], d["slice"]): d["image"] for d in train}
    pairs = []
    for name, volume in _network_inputs("unet_lgg", data):
        for k in range(volume.shape[-1]):
            pairs.append((f"{name}[{k}]", by_key.pop((name, k + 1)), volume[..., k]))  # slices are numbered from 1
    assert not by_key, f"training slices with no inference counterpart: {sorted(by_key)[:5]}"
    return pairs


def _brats_pairs(tmp: Path) -> list[tuple[str, torch.Tensor, torch.Tensor]]:
    data = (
        write_synthetic_brats(tmp, n_cases=2, shape=(SIZE, SIZE, 16), n_validation=0, seed=1) / TRAINING_FOLDERS[2020]
    )
    items = brats_datalist(data, num_folds=2)["training"]  # the loader's items, as brats_slices reads every split
    train = _training_inputs("igs_brats", data, [s for item in items for s in case_slices(item)])
    by_key = {(d["patient"], d["slice"]): d["image"] for d in train}
    parser = _parser("igs_brats", "inference.json", data, pattern="full")  # training sees full sampling
    dataset, inferer = parser.get_parsed_content("dataset"), parser.get_parsed_content("inferer")
    pairs = []
    for k in range(len(dataset)):
        item = dataset[k]
        seen = inferer(torch.as_tensor(item["image"]).float()[None], torch.nn.Identity())[0]  # (4, H, W, D)
        for z in range(seen.shape[-1]):
            if (item["case"], z) in by_key:  # training reads the slices with brain in them
                pairs.append((f"{item['case']}[{z}]", by_key.pop((item["case"], z)), seen[..., z]))
    assert not by_key, f"training slices with no inference counterpart: {sorted(by_key)[:5]}"
    return pairs


PAIRS: dict[str, Callable[[Path], list[tuple[str, torch.Tensor, torch.Tensor]]]] = {
    "igs_acdc": _acdc_pairs,
    "igs_brats": _brats_pairs,
    "unet_lgg": _lgg_pairs,
}


@pytest.mark.parametrize("bundle", sorted(PAIRS))
def test_training_and_inference_give_the_network_the_same_input(bundle: str, tmp_path: Path) -> None:
    pairs = PAIRS[bundle](tmp_path)
    assert len(pairs) >= 6
    worst = max(float((torch.as_tensor(a) - torch.as_tensor(b)).abs().max()) for _, a, b in pairs)
    for name, train, infer in pairs:
        train = torch.as_tensor(train)
        assert train.shape == infer.shape and train.dtype == infer.dtype == torch.float32, name
        torch.testing.assert_close(infer, train, rtol=0, atol=1e-5, msg=lambda m: f"{name} (worst {worst:.2e}): {m}")
