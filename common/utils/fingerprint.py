"""Fingerprints of the settings a saved state was made with (a training checkpoint, a search state, a pattern), and
the check that refuses to continue from state made with other settings."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["as_fingerprint", "check_fingerprint"]


def as_fingerprint(settings: Mapping[str, Any]) -> dict[str, Any]:
    """``settings`` as plain JSON values (tuples become lists, keys strings), so that a fingerprint read back from a
    file compares equal to a freshly made one. Raises ``TypeError`` for values JSON cannot hold."""
    return json.loads(json.dumps(dict(settings)))


def check_fingerprint(
    found: Mapping[str, Any] | None,
    expected: Mapping[str, Any],
    source: str | Path,
    keys: Sequence[str] | None = None,
    remedy: str = "delete it to start afresh, or use the settings it was made with",
) -> None:
    """Raise ``ValueError`` naming ``source``, every differing entry and ``remedy`` when ``found`` (read from a saved
    state) does not match ``expected`` on ``keys`` (all of ``expected`` by default). ``found`` None (state saved
    before fingerprints existed) is refused too."""
    keys = list(expected) if keys is None else list(keys)
    if found is None:
        raise ValueError(
            f"{source}: expected a fingerprint of the settings it was made with ({', '.join(keys)}), found none; "
            f"{remedy}"
        )
    diff = [
        f"{k}: expected {expected.get(k)!r}, found {found.get(k)!r}" for k in keys if found.get(k) != expected.get(k)
    ]
    if diff:
        raise ValueError(f"{source}: made with other settings ({'; '.join(diff)}); {remedy}")
