"""Label conversions: BraTS labels 0/1/2/4 to tumour-region channels."""

from __future__ import annotations

from .array import ConvertBratsLabels
from .dictionary import ConvertBratsLabelsd
