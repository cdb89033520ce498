"""configs/multi_gpu_train.json of every bundle, run as the model card says: `torchrun ... -m monai.bundle run` with two
processes on CPU (gloo), one tiny epoch, on a copy of the bundle."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import torch
from monai.bundle import ConfigParser

from tests.bundles.conftest import BUNDLES, REPO, SPECS, torchrun_bundle


def validate_single_process(configs: list[str], root: Path, data: Path, key: str, weights: Path) -> float:
    """The key validation metric of ``weights`` on the whole validation split, in this process."""
    parser = ConfigParser()
    parser.read_config(configs)
    parser.update({"bundle_root": str(root), "dataset_dir": str(data), "device": "$torch.device('cpu')"})
    parser["validate#handlers"] = []  # no checkpoint saver: nothing is written
    net = parser.get_parsed_content("network_def")
    net.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True), strict=True)
    parser["network"] = net
    evaluator = parser.get_parsed_content("validate#evaluator")
    evaluator.run()
    return float(evaluator.state.metrics[key])


# every bundle's train configs, and igs_brats with each task override (its ResNet-18 classifier validated by ROC AUC,
# its sigmoid-bounded reconstruction U-Net by SSIM)
CASES = [(b, ()) for b in BUNDLES] + [("igs_brats", (f"{task}.json",)) for task in ("classification", "reconstruction")]


@pytest.mark.slow
@pytest.mark.parametrize("bundle, overrides", CASES, ids=["-".join([b, *o]).removesuffix(".json") for b, o in CASES])
def test_two_process_training(bundle: str, overrides: tuple[str, ...], tmp_path: Path) -> None:
    spec = SPECS[bundle]
    root = Path(
        shutil.copytree(REPO / "bundles" / bundle, tmp_path / bundle, ignore=shutil.ignore_patterns("models", "eval"))
    )
    data = (spec.multi_gpu_data or spec.write_data)(tmp_path / "data")
    tiny = tmp_path / "tiny.json"
    tiny.write_text(json.dumps({**spec.tiny, **spec.multi_gpu_tiny}))
    train = [str(root / "configs" / c) for c in (*spec.train_configs, *overrides)] + [str(tiny)]
    configs = train[:-1] + [str(root / "configs" / "multi_gpu_train.json"), str(tiny)]
    rank_logs = torchrun_bundle(
        root,
        configs,
        tmp_path,
        *("--dataset_dir", str(data), "--epochs", "1"),
        *("--logging_file", str(root / "configs" / "logging.conf")),
    )

    # both ranks ran to the end (torchrun exits 0 only if every worker did); only rank 0 logs stats
    parser = ConfigParser()
    parser.read_config(train)
    parser["bundle_root"] = str(root)
    key = next(iter(parser["validate"]["key_metric"]))
    weights = Path(parser.get_parsed_content("ckpt_path"))
    stats = re.compile(rf"Epoch\[\d+\] Metrics -- .*\b{key}: ")
    assert all(rank_logs[rank] for rank in (0, 1)), "expected a log per rank"
    assert len(stats.findall(rank_logs[0])) == 1, rank_logs[0][-3000:]  # validation ran once, logged by rank 0
    assert not stats.findall(rank_logs[1])

    # one model.pt, written by rank 0 from the unwrapped module: it loads into the plain network_def
    assert list(tmp_path.rglob("model.pt")) == [weights] and weights.is_relative_to(root / "models")
    assert not list(weights.parent.glob(".*.tmp"))
    net = parser.get_parsed_content("network_def")
    net.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True), strict=True)
    last = torch.load(weights.parent / "checkpoint_last.pt", map_location="cpu", weights_only=False)
    net.load_state_dict(last["network"], strict=True)
    assert last["engine"]["iteration"] == last["engine"]["epoch_length"]  # one epoch

    # the key metric is over the whole validation split (MONAI's metric handlers all-gather), not rank 0's half
    info = json.loads(weights.with_suffix(".json").read_text())
    assert info["settings"] and info["network"].endswith(type(net).__name__)
    assert info["best_metric"] > 0  # else the comparison below proves nothing
    assert info["best_metric"] == pytest.approx(validate_single_process(train, root, data, key, weights), abs=1e-4)
