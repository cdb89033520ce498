"""Voxel weight maps of a label: weights that grow towards the boundary of the labelled structures."""

from __future__ import annotations

from .array import BoundaryWeight, boundary_weights
from .dictionary import BoundaryWeightd
