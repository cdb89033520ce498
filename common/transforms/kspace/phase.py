"""A smooth, seeded image phase for the phase-aware forward model (a magnitude image alone has conjugate-symmetric
k-space, so line +f would carry exactly the information of line -f; a real acquisition's phase breaks that)."""

from __future__ import annotations

import math
import zlib

import numpy as np
import torch

__all__ = ["FORWARD_MODELS", "check_forward_model", "smooth_phase", "phase_seed", "apply_phase"]

FORWARD_MODELS = ("magnitude", "phase")
"""How an acquisition is simulated: ``"magnitude"`` (the image is the magnitude, k-space conjugate-symmetric; the IGS
paper's setting) or ``"phase"`` (the image times ``exp(i phi)``, ``phi`` a :func:`smooth_phase` map, before the FFT)."""


def check_forward_model(forward_model: str) -> str:
    """Return ``forward_model`` if it is one of :data:`FORWARD_MODELS`, else raise ``ValueError``."""
    if forward_model not in FORWARD_MODELS:
        raise ValueError(f"forward_model: expected one of {FORWARD_MODELS}, found '{forward_model}'")
    return forward_model


def phase_seed(key: str, seed: int = 0) -> int:
    """A stable 31-bit seed for one slice from a text key (e.g. ``"patient001/ED/3"``) and a base ``seed``: the same
    slice gets the same phase in every run, process and pattern (``hash()`` of a string changes between processes)."""
    return (zlib.crc32(key.encode("utf-8")) + 1_000_003 * int(seed)) % (2**31)


def smooth_phase(
    height: int, width: int, seed: int, max_phase: float = math.pi, order: int = 3, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """A smooth random phase map ``(height, width)`` in radians, seeded.

    The map is a random polynomial of total degree ``order`` in the normalised coordinates ``y, x`` in ``[-1, 1]``
    (coefficients drawn from ``N(0, 1)`` with a local generator, so global RNGs are untouched), shifted to zero mean
    and scaled so that its largest absolute value is ``max_phase``: a slowly varying phase as coil sensitivities,
    off-resonance and motion give in real acquisitions. ``order`` 1 is a linear ramp (a shift of k-space), higher
    orders bend it. Equal arguments give equal maps.
    """
    if height < 1 or width < 1:
        raise ValueError(f"height, width: expected positive sizes, found {height}, {width}")
    if order < 1:
        raise ValueError(f"order: expected a polynomial degree >= 1, found {order}")
    if not 0.0 <= max_phase <= 2 * math.pi:
        raise ValueError(f"max_phase: expected radians in [0, 2 pi], found {max_phase}")
    rng = np.random.default_rng(seed)
    y, x = np.meshgrid(np.linspace(-1, 1, height), np.linspace(-1, 1, width), indexing="ij")
    phase = np.zeros((height, width))
    for degree in range(1, order + 1):
        for i in range(degree + 1):
            phase += rng.normal() * y**i * x ** (degree - i)
    phase -= phase.mean()
    peak = np.abs(phase).max()
    if peak > 0:
        phase *= max_phase / peak
    return torch.as_tensor(phase, dtype=dtype)


def apply_phase(image: torch.Tensor, phase: torch.Tensor) -> torch.Tensor:
    """The complex image ``image * exp(i phase)``: real ``(*, H, W)`` magnitude and ``(H, W)`` (or broadcastable)
    phase -> complex64 ``(*, H, W)``. Its magnitude is ``image``: full sampling gives the same network input."""
    return torch.polar(image.to(torch.float32), phase.to(device=image.device, dtype=torch.float32))
