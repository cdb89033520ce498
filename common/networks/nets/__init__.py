"""Whole networks: plain ``nn.Module`` classes."""

from __future__ import annotations

from .crf_segmenter import CRFSegmenter
from .iterative_fcn import IterativeFCN
from .pnet import PNet, rnet
from .resunet3d import ResidualBlock3d, ResUNet3d
from .slicewise import SliceWise
from .unet2d import UNet2d
