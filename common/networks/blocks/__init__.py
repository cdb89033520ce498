"""Network blocks: CRF-RNN layer, k-space undersampling layer."""

from __future__ import annotations

from .crf import CRFNet, PairwiseNet
from .kspace_undersampler import KSpaceUndersampler
