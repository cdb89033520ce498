"""Label conversions: BraTS labels 0/1/2/4 to tumour-region channels; class maps to (overlapping) regions; several
binary lesion masks of one scan merged into one (ATLAS)."""

from __future__ import annotations

from .array import BRATS_NESTED_CLASSES, ClassesToRegions, ConvertBratsLabels, MergeLesionMasks
from .dictionary import ClassesToRegionsd, ConvertBratsLabelsd, MergeLesionMasksd
