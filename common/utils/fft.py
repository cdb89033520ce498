"""Centred orthonormal FFT helpers (fastMRI convention) over chosen axes."""

from __future__ import annotations

from collections.abc import Sequence

import torch

__all__ = ["fftc", "ifftc", "fft2c", "ifft2c"]


# torch.fft.fftshift is used rather than MONAI's fftn_centered_t (which rolls with torch.cat on a real view):
# same result (tested), fewer copies.
def fftc(x: torch.Tensor, dims: Sequence[int]) -> torch.Tensor:
    """Centred orthonormal FFT over ``dims``; real or complex ``x`` -> complex of the same shape. Differentiable."""
    dims = tuple(dims)
    return torch.fft.fftshift(torch.fft.fftn(torch.fft.ifftshift(x, dim=dims), dim=dims, norm="ortho"), dim=dims)


def ifftc(k: torch.Tensor, dims: Sequence[int]) -> torch.Tensor:
    """Inverse of :func:`fftc` over ``dims``; complex -> complex of the same shape. Differentiable."""
    dims = tuple(dims)
    return torch.fft.fftshift(torch.fft.ifftn(torch.fft.ifftshift(k, dim=dims), dim=dims, norm="ortho"), dim=dims)


def fft2c(image: torch.Tensor) -> torch.Tensor:
    """Centred orthonormal 2D FFT over the last two axes: ``(*, H, W)`` -> complex ``(*, H, W)``."""
    return fftc(image, (-2, -1))


def ifft2c(kspace: torch.Tensor) -> torch.Tensor:
    """Centred orthonormal inverse 2D FFT over the last two axes: complex ``(*, H, W)`` -> complex ``(*, H, W)``."""
    return ifftc(kspace, (-2, -1))
