"""Geodesic distance maps of user seeds."""

from __future__ import annotations

from .array import BACKENDS, GeodesicMaps, geodesic_map, has_fastgeodis, has_geodistk
from .dictionary import GeodesicMapsd

__all__ = ["BACKENDS", "GeodesicMaps", "GeodesicMapsd", "geodesic_map", "has_fastgeodis", "has_geodistk"]
