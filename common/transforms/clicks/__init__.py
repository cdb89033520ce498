"""Simulated user clicks (DeepIGeoS rule)."""

from __future__ import annotations

from .array import SimulateClicks, clicks_per_region, clicks_to_seeds, simulate_clicks
from .dictionary import SimulateClicksd
