"""Single-coil Cartesian k-space undersampling of magnitude images: FFT helpers, line masks and transforms.

Forward model (IGS, fastMRI): ``k = fftshift(fft2(ifftshift(x), norm="ortho"))`` over the two in-plane axes and
``x_u = |ifft2c(k * m)|``. A line mask ``m`` weights whole phase-encoding lines, so the FFT along the other in-plane
axis cancels exactly and only 1D transforms along the phase-encoding axis are computed (half the work, same result);
the centring shifts are moved onto the mask (see :func:`undersample_lines`).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Hashable, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from monai.config import KeysCollection, NdarrayOrTensor
from monai.transforms import MapTransform, Transform
from monai.utils import TransformBackends
from monai.utils.type_conversion import convert_to_dst_type, convert_to_tensor
from torch import nn

from common.atomic_io import atomic_path

__all__ = [
    "fftc",
    "ifftc",
    "fft2c",
    "ifft2c",
    "num_lines",
    "CenterLines",
    "EquispacedLines",
    "RandomLines",
    "FullLines",
    "line_mask",
    "save_line_pattern",
    "load_line_pattern",
    "line_spectrum",
    "undersample_lines",
    "undersample",
    "KSpaceUndersampler",
    "KSpaceUndersample",
    "KSpaceUndersampled",
]


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


def num_lines(width: int, acceleration: float) -> int:
    """Line budget ``floor(width / acceleration)`` (256 wide: x4 = 64, x8 = 32, x16 = 16)."""
    if acceleration < 1:
        raise ValueError(f"acceleration: expected a factor >= 1, found {acceleration}")
    n = int(width // acceleration)
    if n < 1:
        raise ValueError(
            f"acceleration x{acceleration} on {width} phase-encoding lines: expected at least one line to keep, "
            f"found {width} / {acceleration} < 1"
        )
    return n


def _center_block(width: int, n: int) -> np.ndarray:
    """Indices of ``n`` contiguous lines centred as fastMRI centres them (``pad = (width - n + 1) // 2``)."""
    pad = (width - n + 1) // 2
    return np.arange(pad, pad + n)


def _to_mask(width: int, lines: np.ndarray) -> torch.Tensor:
    mask = torch.zeros(width, dtype=torch.float32)
    mask[torch.as_tensor(lines, dtype=torch.long)] = 1.0
    return mask


class CenterLines:
    """The ``width // acceleration`` lowest-frequency lines as one contiguous block."""

    def __init__(self, acceleration: float) -> None:
        num_lines(2**31, acceleration)  # validates the factor
        self.acceleration = acceleration

    def __call__(self, width: int, seed: int | None = None) -> torch.Tensor:
        """Return a ``(width,)`` float32 0/1 mask; ``seed`` is accepted for a uniform interface and unused."""
        return _to_mask(width, _center_block(width, num_lines(width, self.acceleration)))


class _CenterPlusOuter:
    """A centre block of ``round(width * center_fraction)`` lines plus outer lines up to the exact line budget."""

    def __init__(self, acceleration: float, center_fraction: float) -> None:
        num_lines(2**31, acceleration)
        if not 0.0 < center_fraction <= 1.0:
            raise ValueError(f"center_fraction: expected a fraction in (0, 1], found {center_fraction}")
        self.acceleration = acceleration
        self.center_fraction = center_fraction

    def _outer(self, outer: np.ndarray, n: int, rng: np.random.Generator, seeded: bool) -> np.ndarray:
        raise NotImplementedError

    def __call__(self, width: int, seed: int | None = None) -> torch.Tensor:
        """Return a ``(width,)`` float32 0/1 mask with exactly ``width // acceleration`` ones; seeded."""
        total = num_lines(width, self.acceleration)
        n_center = min(max(1, round(width * self.center_fraction)), total)
        center = _center_block(width, n_center)
        outer = np.setdiff1d(np.arange(width), center)
        rng = np.random.default_rng(seed)  # local generator: the global numpy/torch RNGs are untouched
        chosen = self._outer(outer, total - n_center, rng, seed is not None)
        return _to_mask(width, np.concatenate([center, chosen]).astype(np.int64))


class EquispacedLines(_CenterPlusOuter):
    """fastMRI-style equispaced pattern: centre block plus evenly spaced outer lines (exact budget).

    The outer lines are spread evenly over the lines outside the centre block; a seed shifts their phase.
    """

    def _outer(self, outer: np.ndarray, n: int, rng: np.random.Generator, seeded: bool) -> np.ndarray:
        if n == 0:
            return outer[:0]
        step = len(outer) / n
        phase = rng.random() if seeded else 0.5
        return outer[np.floor((np.arange(n) + phase) * step).astype(np.int64)]


class RandomLines(_CenterPlusOuter):
    """fastMRI-style random pattern: centre block plus outer lines drawn without replacement (exact budget)."""

    def _outer(self, outer: np.ndarray, n: int, rng: np.random.Generator, seeded: bool) -> np.ndarray:
        return rng.choice(outer, size=n, replace=False)


class FullLines:
    """Full sampling (every line)."""

    def __call__(self, width: int, seed: int | None = None) -> torch.Tensor:
        """Return ``(width,)`` ones."""
        return torch.ones(width, dtype=torch.float32)


def line_mask(
    kind: str,
    width: int,
    acceleration: float = 1.0,
    center_fraction: float | None = None,
    seed: int | None = None,
    pattern_file: str | Path | None = None,
) -> torch.Tensor:
    """Build a ``(width,)`` (or ``(C, width)`` for a per-channel learned pattern) float32 0/1 line mask.

    Args:
        kind: ``"center"``, ``"equispaced"``, ``"random"``, ``"full"`` or ``"learned"`` (read from ``pattern_file``).
        width: number of phase-encoding lines.
        acceleration: undersampling factor; the mask keeps exactly ``width // acceleration`` lines.
        center_fraction: fraction of ``width`` in the centre block (equispaced, random).
        seed: for random and equispaced patterns.
        pattern_file: ``.npy`` written by :func:`save_line_pattern` (learned).
    """
    if kind == "center":
        return CenterLines(acceleration)(width, seed)
    if kind in ("equispaced", "random"):
        if center_fraction is None:
            raise ValueError(f"line_mask('{kind}'): expected a center_fraction, found None")
        cls = EquispacedLines if kind == "equispaced" else RandomLines
        return cls(acceleration, center_fraction)(width, seed)
    if kind == "full":
        return FullLines()(width)
    if kind == "learned":
        if pattern_file is None:
            raise ValueError("line_mask('learned'): expected a pattern_file, found None")
        return load_line_pattern(pattern_file, width=width)
    raise ValueError(f"line_mask: expected kind in center/equispaced/random/full/learned, found '{kind}'")


def save_line_pattern(
    path: str | Path, mask: torch.Tensor | np.ndarray, order: Sequence[int] | None = None, **info: object
) -> Path:
    """Write a line pattern atomically as ``<path>.npy`` plus a JSON sidecar ``<path>.json``.

    The sidecar holds ``width``, ``num_lines``, ``lines`` (indices kept, per channel for a ``(C, W)`` mask), ``order``
    (the order the lines were added in, when known) and whatever ``info`` gives (acceleration, axis, ...).
    Returns the ``.npy`` path.
    """
    arr = np.asarray(torch.as_tensor(mask).detach().cpu(), dtype=np.float32)
    if arr.ndim not in (1, 2):
        raise ValueError(f"save_line_pattern: expected a (W,) or (C, W) mask, found shape {arr.shape}")
    npy = Path(path).with_suffix(".npy")
    npy.parent.mkdir(parents=True, exist_ok=True)
    lines = [np.flatnonzero(row > 0).tolist() for row in np.atleast_2d(arr)]
    meta = {
        "width": int(arr.shape[-1]),
        "num_lines": [len(row) for row in lines] if arr.ndim == 2 else len(lines[0]),
        "lines": lines if arr.ndim == 2 else lines[0],
        "order": None if order is None else [int(i) for i in order],
        **info,
    }
    with atomic_path(npy) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, arr)
    with atomic_path(npy.with_suffix(".json")) as tmp:
        Path(tmp).write_text(json.dumps(meta, indent=2))
    return npy


def load_line_pattern(path: str | Path, width: int | None = None, channels: int | None = None) -> torch.Tensor:
    """Read a ``.npy`` line pattern as float32 ``(W,)`` or ``(C, W)``, checking its width (and channel count)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: expected a k-space line pattern (.npy), found no such file")
    try:
        arr = np.load(path, allow_pickle=False)
    except Exception as e:  # numpy raises several types for non-npy content
        raise ValueError(f"{path}: expected a NumPy .npy line pattern, found unreadable content ({e})") from e
    if arr.ndim not in (1, 2) or not np.issubdtype(arr.dtype, np.number):
        raise ValueError(f"{path}: expected a numeric (W,) or (C, W) line pattern, found {arr.dtype} {arr.shape}")
    if width is not None and arr.shape[-1] != width:
        raise ValueError(f"{path}: expected a pattern {width} lines wide, found {arr.shape[-1]}")
    if channels is not None and arr.ndim == 2 and arr.shape[0] != channels:
        raise ValueError(f"{path}: expected one pattern per channel ({channels}), found {arr.shape[0]}")
    if not (arr > 0).any():
        raise ValueError(f"{path}: expected at least one sampled line, found none")
    return torch.as_tensor(arr, dtype=torch.float32)


def _broadcast_mask(mask: torch.Tensor, pe_dim: int, point: bool) -> torch.Tensor:
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


def _check_pe_dim(pe_dim: int) -> int:
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
    _check_pe_dim(pe_dim)
    return _chunked(lambda x: torch.fft.fft(x, dim=pe_dim, norm="ortho"), image)


def undersample_lines(spectrum: torch.Tensor, mask: torch.Tensor, pe_dim: int = -1) -> torch.Tensor:
    """Zero-filled magnitude for a line mask from :func:`line_spectrum`: ``|ifft(spectrum * ifftshift(mask))|``.

    Masking lines is a circular convolution along ``pe_dim``, which commutes with the centring shifts, so shifting
    the (centred) mask replaces shifting the data: the same result as ``|ifft2c(fft2c(x) * mask)|`` (tested).
    ``spectrum`` complex ``(*, C, H, W)``; ``mask`` ``(L,)`` or ``(C, L)`` -> float ``(*, C, H, W)``, differentiable
    in both.
    """
    _check_pe_dim(pe_dim)
    m = _broadcast_mask(torch.fft.ifftshift(mask.to(spectrum.device), dim=-1), pe_dim, False)
    return _chunked(lambda k: torch.fft.ifft(k * m, dim=pe_dim, norm="ortho").abs(), spectrum)


def undersample(image: torch.Tensor, mask: torch.Tensor, pe_dim: int = -1, point: bool = False) -> torch.Tensor:
    """Zero-filled undersampled magnitude ``|ifft2c(fft2c(image) * mask)|``.

    Args:
        image: real ``(*, C, H, W)`` (magnitude images; ``*`` any batch dims).
        mask: line weights ``(L,)`` shared by all channels or ``(C, L)`` one pattern per channel, ``L`` = size of
            axis ``pe_dim``, centred (index ``L // 2`` is the k-space centre); with ``point=True`` a centred 2D mask
            ``(H, W)`` or ``(C, H, W)``. 0/1 or any real weight.
        pe_dim: the phase-encoding axis that lines index: -1 (W, columns) or -2 (H, rows).
        point: whether ``mask`` is a 2D point mask.

    Returns: float ``(*, C, H, W)`` on ``image.device``. Differentiable in ``image`` and ``mask``.
    """
    _check_pe_dim(pe_dim)
    if point:
        m = _broadcast_mask(mask.to(image.device), pe_dim, True)
        return _chunked(lambda x: ifft2c(fft2c(x) * m).abs(), image)
    return undersample_lines(line_spectrum(image, pe_dim), mask, pe_dim)


class KSpaceUndersampler(nn.Module):
    """Undersampling as a module: ``(B, C, H, W)`` magnitude -> ``(B, C, H, W)`` zero-filled magnitude.

    Args:
        mask: the pattern (see :func:`undersample`); kept as a buffer, or as a parameter with ``trainable=True``.
        pe_dim: -1 (lines index W) or -2 (lines index H).
        point: whether ``mask`` is a 2D point mask.
        trainable: make the mask an ``nn.Parameter`` (gradient-based pattern learning).

    ``forward(x, mask=None)`` uses ``mask`` when given (e.g. a mask that requires grad), else the stored one.
    """

    def __init__(self, mask: torch.Tensor, pe_dim: int = -1, point: bool = False, trainable: bool = False) -> None:
        super().__init__()
        self.pe_dim = _check_pe_dim(pe_dim)
        self.point = point
        mask = torch.as_tensor(mask, dtype=torch.float32)
        _broadcast_mask(mask, pe_dim, point)  # validates the shape at construction
        if trainable:
            self.mask = nn.Parameter(mask.clone())
        else:
            self.register_buffer("mask", mask.clone())

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return undersample(x, self.mask if mask is None else mask, self.pe_dim, self.point)


class KSpaceUndersample(Transform):
    """Acquire a magnitude image as if with the given k-space pattern (zero-filled reconstruction, magnitude).

    Args:
        mask: line weights ``(L,)`` / ``(C, L)``, or a 2D point mask with ``point=True``; a path to a ``.npy``
            pattern from :func:`save_line_pattern` is read with :func:`load_line_pattern`.
        pe_dim: -1 (lines index W) or -2 (lines index H) of the in-plane axes.
        point: whether ``mask`` is a 2D point mask.

    Shapes: ``img`` ``(C, H, W)`` or a stack of slices ``(C, H, W, D)`` (each slice ``[..., d]`` undersampled
    in-plane) -> float32 of the same shape and type (MetaTensor meta kept), on ``img.device``.
    """

    backend = [TransformBackends.TORCH, TransformBackends.NUMPY]

    def __init__(self, mask: NdarrayOrTensor | str | Path, pe_dim: int = -1, point: bool = False) -> None:
        self.pe_dim = _check_pe_dim(pe_dim)
        self.point = point
        if isinstance(mask, (str, Path)):
            mask = load_line_pattern(mask)
        self.mask = torch.as_tensor(np.asarray(mask) if isinstance(mask, list) else mask, dtype=torch.float32)
        _broadcast_mask(self.mask, pe_dim, point)

    def __call__(self, img: NdarrayOrTensor) -> NdarrayOrTensor:
        x = convert_to_tensor(img, dtype=torch.float32, track_meta=False)
        if x.ndim not in (3, 4):
            raise ValueError(f"KSpaceUndersample: expected (C, H, W) or (C, H, W, D), found shape {tuple(x.shape)}")
        size = x.shape[1 + (self.pe_dim == -1)] if not self.point else None
        if size is not None and self.mask.shape[-1] != size:
            raise ValueError(
                f"KSpaceUndersample: expected an image {self.mask.shape[-1]} lines wide along the "
                f"phase-encoding axis, found {size} (image shape {tuple(x.shape)})"
            )
        if x.ndim == 4:  # (C, H, W, D) -> (D, C, H, W): slices become a batch
            out = undersample(x.movedim(-1, 0), self.mask, self.pe_dim, self.point).movedim(0, -1)
        else:
            out = undersample(x, self.mask, self.pe_dim, self.point)
        return convert_to_dst_type(out.contiguous(), img, dtype=torch.float32)[0]


class KSpaceUndersampled(MapTransform):
    """Dictionary twin of :class:`KSpaceUndersample`: same arguments after ``keys``."""

    backend = KSpaceUndersample.backend

    def __init__(
        self,
        keys: KeysCollection,
        mask: NdarrayOrTensor | str | Path,
        pe_dim: int = -1,
        point: bool = False,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.op = KSpaceUndersample(mask, pe_dim, point)

    def __call__(self, data: Mapping[Hashable, NdarrayOrTensor]) -> dict[Hashable, NdarrayOrTensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.op(d[key])
        return d
