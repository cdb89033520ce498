"""Learning-rate schedules of the methods' original code that torch does not have."""

from __future__ import annotations

from .lr_scheduler import CosineAnnealingLateRestarts

__all__ = ["CosineAnnealingLateRestarts"]
