"""Single-coil Cartesian undersampling of magnitude images by line or point masks (functions, differentiable).

Forward model (IGS, fastMRI): ``k = fftshift(fft2(ifftshift(x), norm="ortho"))`` over the two in-plane axes and
``x_u = |ifft2c(k * m)|``. A line mask ``m`` weights whole phase-encoding lines, so the FFT along the other in-plane
axis cancels exactly and only 1D transforms along the phase-encoding axis are computed (half the work, same result);
the centring shifts are moved onto the mask (see :func:`undersample_lines`).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from common.utils.fft import fft2c, ifft2c

__all__ = ["check_pe_dim", "broadcast_mask", "line_spectrum", "undersample_lines", "undersample"]


def broadcast_mask(mask: torch.Tensor, pe_dim: int, point: bool) -> torch.Tensor:
    """Shape a mask to broadcast against ``(*, C, H, W)``; lines index axis ``pe_dim`` (-1: W, -2: H)."""
    if point:
        if mask.ndim not in (2, 3):
            raise ValueError(f"point mask: expected (H, W) or (C, H, W), found shape {tuple(mask.shape)}")
        return mask
    if mask.ndim not in (1, 2):
        raise ValueError(f"line mask: expected (L,) or (C, L), found shape {tuple(mask.shape)}")
    if pe_dim == -2:
        mask = mask.unsqueeze(-1)  # (.., H, 1)
    elif mask.ndim == 2:
        mask = mask.unsqueeze(-2)  # (C, 1, W)
    return mask


def check_pe_dim(pe_dim: int) -> int:
    """Return ``pe_dim`` if it is -1 (lines index W) or -2 (lines index H), else raise ``ValueError``."""
    if pe_dim not in (-1, -2):
        raise ValueError(f"pe_dim: expected -1 (lines index W) or -2 (lines index H), found {pe_dim}")
    return pe_dim


# On CPU a big batch of FFTs thrashes the cache: chunks of about this many elements run ~10x faster (measured).
_CPU_CHUNK = 1 << 18


def _chunked(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """``fn`` over ``x`` ``(*, C, H, W)`` in chunks of the leading dims on CPU, all at once on other devices."""
    if x.device.type != "cpu" or x.numel() <= _CPU_CHUNK or x.ndim < 4:
        return fn(x)
    flat = x.reshape(-1, *x.shape[-3:])
    step = max(1, _CPU_CHUNK // flat[0].numel())
    return torch.cat([fn(part) for part in flat.split(step)]).reshape(x.shape)


def line_spectrum(image: torch.Tensor, pe_dim: int = -1) -> torch.Tensor:
    """Orthonormal FFT of ``image`` along the phase-encoding axis only, in FFT order (not centred).

    A line mask acts along this axis alone, so this is all :func:`undersample_lines` needs; cache it once per image
    (IGS). ``(*, C, H, W)`` real -> complex ``(*, C, H, W)``.
    """
    check_pe_dim(pe_dim)
    return _chunked(lambda x: torch.fft.fft(x, dim=pe_dim, norm="ortho"), image)


def undersample_lines(spectrum: torch.Tensor, mask: torch.Tensor, pe_dim: int = -1) -> torch.Tensor:
    """Zero-filled magnitude for a line mask from :func:`line_spectrum`: ``|ifft(spectrum * ifftshift(mask))|``.

    Masking lines is a circular convolution along ``pe_dim``, which commutes with the centring shifts, so shifting
    the (centred) mask replaces shifting the data: the same result as ``|ifft2c(fft2c(x) * mask)|`` (tested).
    ``spectrum`` complex ``(*, C, H, W)``; ``mask`` ``(L,)`` or ``(C, L)`` -> float ``(*, C, H, W)``, differentiable
    in both.
    """
    check_pe_dim(pe_dim)
    m = broadcast_mask(torch.fft.ifftshift(mask.to(spectrum.device), dim=-1), pe_dim, False)
    return _chunked(lambda k: torch.fft.ifft(k * m, dim=pe_dim, norm="ortho").abs(), spectrum)


def undersample(image: torch.Tensor, mask: torch.Tensor, pe_dim: int = -1, point: bool = False) -> torch.Tensor:
    """Zero-filled undersampled magnitude ``|ifft2c(fft2c(image) * mask)|``.

    Args:
        image: real ``(*, C, H, W)`` (magnitude images; ``*`` any batch dims) or complex (with an image phase,
            :func:`~common.transforms.apply_phase`).
        mask: line weights ``(L,)`` shared by all channels or ``(C, L)`` one pattern per channel, ``L`` = size of
            axis ``pe_dim``, centred (index ``L // 2`` is the k-space centre); with ``point=True`` a centred 2D mask
            ``(H, W)`` or ``(C, H, W)``. 0/1 or any real weight.
        pe_dim: the phase-encoding axis that lines index: -1 (W, columns) or -2 (H, rows).
        point: whether ``mask`` is a 2D point mask.

    Returns: float ``(*, C, H, W)`` on ``image.device``. Differentiable in ``image`` and ``mask``.
    """
    check_pe_dim(pe_dim)
    if point:
        m = broadcast_mask(mask.to(image.device), pe_dim, True)
        return _chunked(lambda x: ifft2c(fft2c(x) * m).abs(), image)
    return undersample_lines(line_spectrum(image, pe_dim), mask, pe_dim)
