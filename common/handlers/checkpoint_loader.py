"""MONAI's CheckpointLoader with errors that say how to fix a missing or mismatched weights file."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from ignite.engine import Engine
from monai.handlers import CheckpointLoader
from torch import nn

from common.networks.weights import missing_weights_error, warn_if_settings_differ, weights_mismatch

__all__ = ["CheckedCheckpointLoader"]


class CheckedCheckpointLoader(CheckpointLoader):
    """:class:`monai.handlers.CheckpointLoader` whose failures are one clear message instead of PyTorch's list.

    Args:
        load_path, load_dict, name, map_location, strict, strict_shape: as in MONAI's ``CheckpointLoader``.
        settings: the config values the network here was built with (``{"image_size": "@image_size",
            "unet_features": "@unet_features"}`` in a config). When the weights do not fit, the ``ValueError`` names
            them and the settings the weights were trained with (``<load_path>.json``, written by
            :class:`~common.handlers.AtomicCheckpointSaver`), and the overrides to pass; when they fit but a setting
            differs (e.g. ``image_size``) a warning is logged.

    Raises (when the engine starts): ``FileNotFoundError`` for a missing file (says how to train), ``ValueError``
    for weights of another network.
    """

    def __init__(
        self,
        load_path: str,
        load_dict: dict,
        name: str | None = None,
        map_location: dict | None = None,
        strict: bool = True,
        strict_shape: bool = True,
        settings: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(load_path, load_dict, name, map_location, strict, strict_shape)
        self.settings = None if settings is None else dict(settings)

    def __call__(self, engine: Engine) -> None:
        path = Path(self.load_path)
        if not path.is_file():
            raise missing_weights_error(path, "--ckpt_path <weights>")
        try:
            super().__call__(engine)
        except RuntimeError:  # load_state_dict: missing / unexpected keys or size mismatches
            networks = [(k, o) for k, o in self.load_dict.items() if isinstance(o, nn.Module)]
            if not networks:
                raise
            state = torch.load(path, map_location="cpu", weights_only=True)
            key, network = networks[0]
            if isinstance(state, Mapping) and len(self.load_dict) > 1 and key in state:
                state = state[key]
            error = weights_mismatch(network, state, path, self.settings) if isinstance(state, Mapping) else None
            if error is None:
                raise
            raise error from None  # PyTorch's message lists every tensor: the cause would bury this one
        warn_if_settings_differ(path, self.settings)
