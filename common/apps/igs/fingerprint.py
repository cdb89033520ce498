"""What an IGS search (or a learned pattern) was made from: network weights, data, loss and forward model, so that a
resumed search or a comparison never mixes state made with other settings."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from common.utils.fingerprint import as_fingerprint
from common.utils.fingerprint import check_fingerprint as check_settings

__all__ = ["weights_digest", "data_digest", "acquisition_settings", "search_fingerprint", "check_fingerprint"]


def weights_digest(network: nn.Module) -> str:
    """SHA-256 (hex, first 16 characters) of the network's state dict: names, dtypes, shapes and values in key order.
    Equal weights give equal digests on any device; a retrained network gives another."""
    h = hashlib.sha256()
    for name, tensor in network.state_dict().items():
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")  # 0-dim too
    return h.hexdigest()[:16]


def data_digest(items: Sequence[Mapping], image_key: str = "image", label_key: str = "label") -> str:
    """SHA-256 (hex, first 16 characters) of a list of slice dicts: their order, ``patient`` / ``phase`` / ``slice``
    names and image and label values. Another split, data set, image size or slice order gives another digest."""
    h = hashlib.sha256()
    for d in items:
        h.update(f"{d.get('patient', '')}/{d.get('phase', '')}/{d.get('slice', '')}|".encode())
        for key in (image_key, label_key):
            a = np.ascontiguousarray(np.asarray(d[key], dtype=np.float32))
            h.update(f"{a.shape}|".encode())
            h.update(a.tobytes())
    return h.hexdigest()[:16]


def acquisition_settings(
    forward_model: str, phase_seed_base: int, max_phase: float, normalize: Callable | None
) -> dict[str, Any]:
    """The fingerprint entries that say how the network's input was made, shared by every pattern search:
    ``forward_model``, ``phase_map`` (its seed base and peak under the ``"phase"`` model, else None) and
    ``normalize`` (the function's name, ``"custom"`` if it has none, None for no normalisation)."""
    return {
        "forward_model": forward_model,
        "phase_map": {"seed_base": phase_seed_base, "max_phase": max_phase} if forward_model == "phase" else None,
        "normalize": None if normalize is None else getattr(normalize, "__qualname__", "custom"),
    }


def search_fingerprint(network: nn.Module, data: Sequence[Mapping], **settings: Any) -> dict[str, Any]:
    """``{"weights": ..., "data": ..., **settings}`` with JSON-serialisable ``settings`` (loss, forward model, start,
    lines per iteration, ...): what a search state and the patterns it writes are stamped with."""
    return as_fingerprint({"weights": weights_digest(network), "data": data_digest(data), **settings})


def check_fingerprint(
    found: Mapping[str, Any] | None, expected: Mapping[str, Any], source: str | Path, keys: Sequence[str] | None = None
) -> None:
    """:func:`common.utils.check_fingerprint` for a search state or pattern file (the remedy names the patterns)."""
    check_settings(
        found,
        expected,
        source,
        keys,
        remedy="delete it (and the patterns written with it) to search again with these settings, or use the "
        "settings it was made with",
    )
