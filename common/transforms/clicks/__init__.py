"""Simulated user clicks (DeepIGeoS rule, on the slices a user looks at)."""

from __future__ import annotations

from .array import SLICE_CHOICES, SimulateClicks, clicks_per_region, clicks_to_seeds, paint_balls, simulate_clicks
from .dictionary import SimulateClicksd

__all__ = [
    "SLICE_CHOICES",
    "SimulateClicks",
    "SimulateClicksd",
    "clicks_per_region",
    "clicks_to_seeds",
    "paint_balls",
    "simulate_clicks",
]
