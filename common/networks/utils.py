"""Network utilities: load a bundle's weights with a clear error; an inference copy with batch norm folded."""

from __future__ import annotations

import copy
from pathlib import Path

import torch
from monai.networks.blocks import ADN, Convolution
from torch import nn
from torch.nn.modules.conv import _ConvNd
from torch.nn.utils.fusion import fuse_conv_bn_eval

__all__ = ["load_weights", "optimize_for_inference"]


def load_weights(
    network: torch.nn.Module, path: str | Path, map_location: str | torch.device = "cpu"
) -> torch.nn.Module:
    """Load a bare state dict (``models/model.pt``) into ``network``, with an error that says how to make one."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: expected trained weights (a state dict), found no file; train first with "
            "`python -m monai.bundle run training --config_file <bundle>/configs/train.json` or pass the checkpoint"
        )
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
        network.load_state_dict(state)
    except Exception as e:  # unpickling / key / shape errors
        raise ValueError(f"{path}: expected a state dict matching {type(network).__name__}, found: {e}") from e
    return network


_BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


_TRANSPOSED = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)


def optimize_for_inference(net: nn.Module, channels_last: bool = True) -> nn.Module:
    """Copy of ``net`` in eval mode, with the same outputs (up to float rounding) and less work per call.

    In every MONAI :class:`~monai.networks.blocks.Convolution` whose activation-dropout-norm block starts with a
    batch norm, the norm (its running statistics) is folded into the convolution's weights and bias; the ReLU
    that follows works in place (its input is the convolution's fresh output). With ``channels_last`` the
    weights of 2D / 3D convolutions are stored channels-last, which oneDNN (CPU) and cuDNN run faster; outputs
    are then channels-last too (same values and shape, other strides).

    ``net`` itself is left unchanged (training, checkpoints and export use it). The copy is for inference only:
    batch statistics are no longer computed, so it must not be trained.
    """
    fused = copy.deepcopy(net).eval()
    for block in fused.modules():
        if not isinstance(block, Convolution) or not isinstance(getattr(block, "adn", None), ADN):
            continue
        adn = block.adn
        first = next(iter(adn.named_children()), None)
        if first is None or not isinstance(first[1], _BATCH_NORMS) or not isinstance(block.conv, _ConvNd):
            continue
        block.conv = fuse_conv_bn_eval(block.conv, first[1], transpose=isinstance(block.conv, _TRANSPOSED))
        setattr(adn, first[0], nn.Identity())
        if isinstance(getattr(adn, "A", None), nn.ReLU):
            adn.A.inplace = True
    if channels_last:
        for module in fused.modules():
            if isinstance(module, _ConvNd) and module.weight.ndim in (4, 5):
                fmt = torch.channels_last if module.weight.ndim == 4 else torch.channels_last_3d
                module.weight.data = module.weight.data.contiguous(memory_format=fmt)
    return fused
