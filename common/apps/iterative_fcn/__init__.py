"""The iterative FCN with instance memory (Lessmann et al. 2019): the instance memory, the training samples, the loss
and the bounded whole-volume traversal."""

from __future__ import annotations

from .loss import InstanceLoss
from .memory import InstanceMemory, traversal_order
from .samples import InstanceSampled, crop_padded
from .traversal import END_REASONS, IterativeInferer, Traversal, traverse

__all__ = [
    "InstanceLoss",
    "InstanceMemory",
    "traversal_order",
    "InstanceSampled",
    "crop_padded",
    "END_REASONS",
    "IterativeInferer",
    "Traversal",
    "traverse",
]
