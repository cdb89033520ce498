"""load_weights and CheckedCheckpointLoader: a config/checkpoint mismatch is one error naming the settings the weights
were trained with (models/model.json) and the overrides to pass, not PyTorch's list of size mismatches."""

from __future__ import annotations

import json
import logging
import re

import pytest
import torch
from ignite.engine import Engine
from monai.networks.nets import BasicUNet

from common.handlers import CheckedCheckpointLoader
from common.networks import load_weights
from common.networks.weights import read_model_info, write_model_info

SMALL = [4, 4, 8, 8, 16, 4]
OTHER = [8, 8, 16, 16, 32, 8]


def unet(features: list[int]) -> BasicUNet:
    return BasicUNet(spatial_dims=2, in_channels=1, out_channels=4, features=features)


@pytest.fixture
def trained(tmp_path):
    """``model.pt`` of a small U-Net plus the ``model.json`` the training saver writes beside it."""
    net = unet(SMALL)
    path = tmp_path / "models" / "model.pt"
    path.parent.mkdir()
    torch.save(net.state_dict(), path)
    write_model_info(path, net, {"image_size": 128, "num_classes": 4, "unet_features": SMALL}, best_metric=0.5)
    return path, net


def test_matching_weights_load(trained):
    path, net = trained
    other = load_weights(unet(SMALL), path, settings={"image_size": 128, "unet_features": SMALL})
    for k, v in net.state_dict().items():
        torch.testing.assert_close(other.state_dict()[k], v)
    wrapped = torch.nn.DataParallel(unet(SMALL))
    load_weights(wrapped, path)  # a wrapper is looked through
    torch.testing.assert_close(wrapped.module.state_dict()["final_conv.weight"], net.final_conv.weight)
    assert read_model_info(path)["network"] == "monai.networks.nets.basic_unet.BasicUNet"


def test_mismatch_names_the_training_settings_and_the_overrides(trained):
    path, _ = trained
    settings = {"image_size": 256, "num_classes": 4, "unet_features": OTHER}
    with pytest.raises(ValueError) as e:
        load_weights(unet(OTHER), path, settings=settings)
    msg = str(e.value)
    assert msg.startswith(f"{path}: expected weights for BasicUNet with image_size=256, num_classes=4, unet_features=")
    assert f"found weights trained with image_size=128, num_classes=4, unet_features={SMALL} (model.json;" in msg
    assert f"pass the same overrides, e.g. --image_size 128 --unet_features '{json.dumps(SMALL)}'" in msg
    assert "size mismatch" not in msg and len(msg) < 600 and e.value.__cause__ is None


def test_mismatch_without_side_file_and_other_errors(trained, tmp_path):
    path, _ = trained
    path.with_suffix(".json").unlink()
    with pytest.raises(ValueError, match=r"expected weights for BasicUNet, found weights of another network \(.* is"):
        load_weights(unet(OTHER), path)
    with pytest.raises(FileNotFoundError, match="missing.pt: expected trained weights .* train first"):
        load_weights(unet(SMALL), tmp_path / "missing.pt")
    (tmp_path / "bad.pt").write_text("not a checkpoint")
    with pytest.raises(ValueError, match="bad.pt: expected a state dict, found unreadable content"):
        load_weights(unet(SMALL), tmp_path / "bad.pt")


def test_other_image_size_loads_with_a_warning(trained, caplog):
    path, _ = trained
    with caplog.at_level(logging.WARNING, logger="common.networks.weights"):
        load_weights(unet(SMALL), path, settings={"image_size": 256, "unet_features": SMALL})
    assert "trained with image_size=128, used here with image_size=256" in caplog.text


def test_checkpoint_loader_handler_gives_the_same_error(trained, tmp_path):
    path, net = trained
    settings = {"image_size": 128, "num_classes": 4, "unet_features": OTHER}
    loader = CheckedCheckpointLoader(str(path), {"model": unet(OTHER)}, map_location="cpu", settings=settings)
    hint = re.escape(f"expected weights for BasicUNet with image_size=128, num_classes=4, unet_features={OTHER}, found")
    with pytest.raises(
        ValueError, match=hint + ".*" + re.escape(f"pass the same overrides, e.g. --unet_features '{SMALL}'") + "$"
    ):
        loader(Engine(lambda e, b: None))
    good = unet(SMALL)
    CheckedCheckpointLoader(str(path), {"model": good}, map_location="cpu")(Engine(lambda e, b: None))
    torch.testing.assert_close(good.final_conv.weight, net.final_conv.weight)
    with pytest.raises(FileNotFoundError, match="none.pt: expected trained weights"):
        CheckedCheckpointLoader(str(tmp_path / "none.pt"), {"model": good})(Engine(lambda e, b: None))


def test_prefix_loads_one_part_of_a_checkpoint(tmp_path):
    whole = torch.nn.ModuleDict({"backbone": unet(SMALL), "crf": torch.nn.Linear(3, 2)})
    path = tmp_path / "joint.pt"
    torch.save(whole.state_dict(), path)
    part = load_weights(torch.nn.Linear(3, 2), path, prefix="crf.")
    torch.testing.assert_close(part.weight, whole["crf"].weight)
    with pytest.raises(
        ValueError, match=r"joint.pt: expected entries under 'head.', found only entries under \['backbone.', 'crf.'\]"
    ):
        load_weights(torch.nn.Linear(3, 2), path, prefix="head.")
    with pytest.raises(ValueError, match="expected weights for Linear"):
        load_weights(torch.nn.Linear(4, 2), path, prefix="crf.")
