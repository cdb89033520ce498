"""Whole networks: plain ``nn.Module`` classes."""

from __future__ import annotations

from .pnet import PNet, rnet
from .unet2d import UNet2d
