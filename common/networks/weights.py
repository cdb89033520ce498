"""Trained weights of a bundle's network: loading with clear errors, and the side file of the settings they were
trained with (``models/model.pt`` + ``models/model.json``)."""

from __future__ import annotations

import json
import logging
import shlex
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from common.utils.atomic_io import atomic_path

__all__ = [
    "load_weights",
    "missing_weights_error",
    "weights_mismatch",
    "warn_if_settings_differ",
    "model_info_path",
    "write_model_info",
    "read_model_info",
    "unwrap_parallel",
]

logger = logging.getLogger(__name__)


def model_info_path(ckpt_path: str | Path) -> Path:
    """The side file that records what a weights file was trained with: ``models/model.pt`` -> ``models/model.json``."""
    return Path(ckpt_path).with_suffix(".json")


def write_model_info(ckpt_path: str | Path, network: nn.Module, settings: Mapping[str, Any], **extra: Any) -> Path:
    """Write ``<ckpt>.json`` atomically: the network class, the config ``settings`` it was built with, ``extra``.

    ``settings`` are config ids and their resolved values (``{"image_size": 128, "unet_features": [8, ...]}``), so a
    mismatch can be answered with the overrides to pass (:func:`load_weights`). ``model.pt`` itself stays a bare
    state dict (MONAI's ``ckpt_export``, ``CheckpointLoader`` and MONAI Label load it as such).
    """
    cls = type(unwrap_parallel(network))
    info = {"network": f"{cls.__module__}.{cls.__qualname__}", "settings": dict(settings), **extra}
    path = model_info_path(ckpt_path)
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(info, indent=2, default=str))
    return path


def read_model_info(ckpt_path: str | Path) -> dict[str, Any] | None:
    """What :func:`write_model_info` wrote beside ``ckpt_path``, or None when there is no (readable) side file."""
    try:
        info = json.loads(model_info_path(ckpt_path).read_text())
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) else None


def unwrap_parallel(obj: Any) -> Any:
    """The module inside a ``DataParallel`` / ``DistributedDataParallel`` wrapper; anything else as it is."""
    return obj.module if isinstance(obj, (nn.DataParallel, nn.parallel.DistributedDataParallel)) else obj


def _cli(value: Any) -> str:
    return shlex.quote(value if isinstance(value, str) else json.dumps(value))


def _settings_text(settings: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={json.dumps(v, default=str)}" for k, v in settings.items())


def missing_weights_error(path: str | Path, how_to_pass: str) -> FileNotFoundError:
    """The error for a weights file that is not there: it names ``path`` and says how to train one, or to pass
    ``how_to_pass`` (e.g. ``"--ckpt_path <weights>"``)."""
    return FileNotFoundError(
        f"{path}: expected trained weights (a state dict), found no file; train first with "
        f"`python -m monai.bundle run training --config_file <bundle>/configs/train.json` or pass {how_to_pass}"
    )


def weights_mismatch(
    network: nn.Module, state: Mapping[str, Any], path: str | Path, settings: Mapping[str, Any] | None = None
) -> ValueError | None:
    """The error to raise when ``state`` does not fit ``network`` (keys or shapes), else None.

    The message says what the network here is (its class and ``settings``, the config values it was built with),
    what the weights were trained with (from ``<ckpt>.json``, see :func:`write_model_info`) and the overrides to pass.
    """
    own = unwrap_parallel(network).state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [
        (k, tuple(state[k].shape), tuple(v.shape))
        for k, v in own.items()
        if k in state and isinstance(state[k], torch.Tensor) and state[k].shape != v.shape
    ]
    if shapes:
        detail = f"{shapes[0][0]} is {shapes[0][1]} there, {shapes[0][2]} here; {len(shapes)} tensors differ in shape"
    elif missing or unexpected:
        detail = f"{len(missing)} tensors missing (e.g. {missing[:1]}), {len(unexpected)} unexpected ({unexpected[:1]})"
    else:
        return None
    expected = type(unwrap_parallel(network)).__name__ + (f" with {_settings_text(settings)}" if settings else "")
    info = read_model_info(path)
    trained = info.get("settings") if info else None
    if isinstance(trained, dict) and trained:
        found = f"weights trained with {_settings_text(trained)} ({model_info_path(path).name}; {detail})"
        diff = {k: v for k, v in trained.items() if settings is None or settings.get(k) != v}
        hint = "pass the same overrides, e.g. " + " ".join(f"--{k} {_cli(v)}" for k, v in (diff or trained).items())
    else:
        found = f"weights of another network ({detail})"
        hint = (
            "pass the overrides the weights were trained with (the network settings, e.g. the config file merged on "
            "train.json such as configs/demo.json)"
        )
    return ValueError(f"{path}: expected weights for {expected}, found {found}; {hint}")


def load_weights(
    network: torch.nn.Module,
    path: str | Path,
    map_location: str | torch.device = "cpu",
    settings: Mapping[str, Any] | None = None,
    prefix: str = "",
) -> torch.nn.Module:
    """Load a bare state dict (``models/model.pt``) into ``network``, with errors that say how to fix them.

    Args:
        network: the module built from the config (a ``DistributedDataParallel`` / ``DataParallel`` wrapper is
            looked through).
        path: the weights file.
        map_location: as in ``torch.load``.
        settings: the config values ``network`` was built with (``{"unet_features": [...], ...}``), named in the
            error when the weights do not fit, and compared with the training settings saved beside the weights.
        prefix: load only the entries whose names start with it, without it (``"crf."``: the CRF of a network that
            holds one as its ``crf`` attribute); ``""`` loads them all.

    Raises:
        FileNotFoundError: no file at ``path`` (says how to train).
        ValueError: unreadable file; no entry under ``prefix``; or weights of another shape, naming the settings they
            were trained with (from ``<path>.json``) and the overrides to pass, instead of PyTorch's list of size
            mismatches.
    """
    path = Path(path)
    if not path.is_file():
        raise missing_weights_error(path, "the checkpoint")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # torch raises several types for a corrupt file
        raise ValueError(f"{path}: expected a state dict, found unreadable content ({e})") from e
    if not isinstance(state, Mapping):
        raise ValueError(f"{path}: expected a state dict, found a {type(state).__name__}")
    if prefix:
        part = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
        if not part:
            heads = sorted({k.split(".")[0] + "." for k in state})
            raise ValueError(f"{path}: expected entries under '{prefix}', found only entries under {heads}")
        state = part
    error = weights_mismatch(network, state, path, settings)
    if error is not None:
        raise error
    unwrap_parallel(network).load_state_dict(state)
    warn_if_settings_differ(path, settings)
    return network


def warn_if_settings_differ(path: str | Path, settings: Mapping[str, Any] | None) -> None:
    """Log a warning when ``settings`` differ from those saved beside the weights (loading worked: e.g. image size)."""
    info = read_model_info(path)
    trained = info.get("settings") if info else None
    if not settings or not isinstance(trained, dict):
        return
    diff = {k: (trained[k], v) for k, v in settings.items() if k in trained and trained[k] != v}
    if diff:
        logger.warning(
            "%s: trained with %s, used here with %s",
            path,
            _settings_text({k: a for k, (a, _) in diff.items()}),
            _settings_text({k: b for k, (_, b) in diff.items()}),
        )
