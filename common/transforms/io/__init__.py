"""Writers of predictions in a data set's own layout."""

from __future__ import annotations

from .array import SaveLggMasks
from .dictionary import SaveLggMasksd
