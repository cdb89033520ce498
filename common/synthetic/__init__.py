"""Seeded synthetic writers of the data sets in their real layouts (tests and demos only)."""

from __future__ import annotations

from .acdc import write_synthetic_acdc
from .lgg import SITES, write_synthetic_lgg

__all__ = [
    "write_synthetic_acdc",
    "SITES",
    "write_synthetic_lgg",
]
