"""Networks (``nets``), their blocks (``blocks``) and utilities (weight loading, inference copies)."""

from __future__ import annotations

from .utils import load_weights, optimize_for_inference
