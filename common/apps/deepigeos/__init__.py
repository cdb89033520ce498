"""DeepIGeoS: the click-refinement step (geodesic maps, R-Net, CRF-Net(fu))."""

from __future__ import annotations

from .refinement import Refinement, refine, refinement_box
