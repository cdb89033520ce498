"""K-space line patterns: exact-budget baseline masks (centre, one-sided centre, equispaced, random, full), learned
pattern files, and the number of distinct frequencies a pattern covers."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from common.utils.atomic_io import atomic_path

__all__ = [
    "num_lines",
    "distinct_frequencies",
    "CenterLines",
    "OneSidedCenterLines",
    "EquispacedLines",
    "RandomLines",
    "FullLines",
    "LearnedLines",
    "MaskFactory",
    "line_pattern",
    "line_mask",
    "save_line_pattern",
    "load_line_pattern",
]


MaskFactory = Callable[[int], torch.Tensor]
"""A line pattern built from the image: ``factory(width)`` -> float32 mask ``(width,)`` (or ``(C, width)``)."""


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


def distinct_frequencies(mask: torch.Tensor | np.ndarray) -> int | list[int]:
    """How many distinct frequencies ``|f| = |index - width // 2|`` the sampled lines (weight > 0) of a line pattern
    cover, ``width // 2`` being the k-space centre after fftshift.

    On a magnitude image (conjugate-symmetric k-space) line ``+f`` carries what line ``-f`` carries, so this is the
    information a pattern really acquires under the paper's forward model: a centred block of ``n`` lines covers about
    ``n / 2 + 1``, a one-sided block ``n``.

    ``mask`` ``(W,)`` -> ``int``; ``(C, W)`` -> one ``int`` per row (list of ``C``).
    """
    arr = np.asarray(torch.as_tensor(mask).detach().cpu())
    if arr.ndim not in (1, 2):
        raise ValueError(f"mask: expected a (W,) or (C, W) line pattern, found shape {arr.shape}")
    freq = np.abs(np.arange(arr.shape[-1]) - arr.shape[-1] // 2)
    counts = [len(np.unique(freq[row > 0])) for row in np.atleast_2d(arr)]
    return counts[0] if arr.ndim == 1 else counts


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


class OneSidedCenterLines:
    """One-sided (partial-Fourier) centre block: the ``n = width // acceleration`` lines ``c, c + 1, ..., c + n - 1``
    from the k-space centre ``c = width // 2`` (after fftshift) upwards.

    It covers each frequency ``|f|`` from 0 to ``n - 1`` once, where the centred block of the same budget spends about
    half its lines on mirrors (``-f`` beside ``+f``): on a magnitude image the same information, with an image phase
    not.
    """

    def __init__(self, acceleration: float) -> None:
        num_lines(2**31, acceleration)  # validates the factor
        self.acceleration = acceleration

    def __call__(self, width: int, seed: int | None = None) -> torch.Tensor:
        """Return a ``(width,)`` float32 0/1 mask; ``seed`` is accepted for a uniform interface and unused."""
        n, c = num_lines(width, self.acceleration), width // 2
        if c + n > width:
            raise ValueError(
                f"acceleration x{self.acceleration} on {width} lines: expected a one-sided block of {n} lines to fit "
                f"between the centre {c} and the edge, found room for {width - c}; use an acceleration >= 2"
            )
        return _to_mask(width, np.arange(c, c + n))


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


class LearnedLines:
    """A learned (IGS) line pattern read from its ``.npy`` file each time a mask is asked for.

    Args:
        pattern_file: ``.npy`` written by :func:`save_line_pattern` (``(W,)`` or ``(C, W)`` line weights).
        forward_model: if given (``"magnitude"`` or ``"phase"``), the forward model the pattern is used under: the
            ``forward_model`` of its JSON sidecar (written by the IGS search and LOUPE) must name it, or the call
            raises ``ValueError`` naming the sidecar, the forward model it holds and this one (a pattern learned on
            conjugate-symmetric magnitude k-space is not one learned with an image phase, and vice versa).

    Nothing is read when the object is made, so a configuration that names a pattern the search has not written
    yet can still be parsed and checked; the call raises ``FileNotFoundError`` naming the file.
    """

    def __init__(self, pattern_file: str | Path, forward_model: str | None = None) -> None:
        self.pattern_file = Path(pattern_file)
        self.forward_model = forward_model

    def __call__(self, width: int, seed: int | None = None) -> torch.Tensor:
        """Return the pattern as float32 ``(width,)`` / ``(C, width)``; ``seed`` is accepted and unused."""
        mask = load_line_pattern(self.pattern_file, width=width)
        if self.forward_model is not None:
            self._check_forward_model()
        return mask

    def _check_forward_model(self) -> None:
        sidecar = self.pattern_file.with_suffix(".json")
        if not sidecar.is_file():
            raise FileNotFoundError(
                f"{sidecar}: expected the JSON sidecar of {self.pattern_file.name} naming the forward model it was "
                f"learned under ('{self.forward_model}' is simulated here), found no such file"
            )
        found = json.loads(sidecar.read_text()).get("forward_model")
        if found == self.forward_model:
            return
        expected = f"expected a pattern learned under the '{self.forward_model}' forward model (the one simulated here)"
        if found is None:
            raise ValueError(
                f"{sidecar}: {expected}, found no forward_model in the sidecar; point --pattern_file at a pattern the "
                f"IGS search or LOUPE wrote under '{self.forward_model}'"
            )
        raise ValueError(
            f"{sidecar}: {expected}, found '{found}'; pass --forward_model {found} or point --pattern_file at a "
            f"{self.forward_model} pattern"
        )


_KINDS = ("center", "one_sided", "equispaced", "random", "full", "learned")


def line_pattern(
    kind: str,
    acceleration: float = 1.0,
    center_fraction: float | None = None,
    seed: int | None = None,
    pattern_file: str | Path | None = None,
) -> MaskFactory:
    """Map a configuration string to a mask factory ``width -> (width,)`` mask (as fastMRI's mask-type factory).

    Args:
        kind: ``"center"``, ``"one_sided"`` (:class:`OneSidedCenterLines`), ``"equispaced"``, ``"random"``,
            ``"full"`` or ``"learned"`` (read from ``pattern_file`` when the mask is built, not now).
        acceleration: undersampling factor; the mask keeps exactly ``width // acceleration`` lines.
        center_fraction: fraction of the width in the centre block (equispaced, random); ignored by the others.
        seed: bound to the factory, so every call gives the same mask (random, equispaced); ignored by the others.
        pattern_file: ``.npy`` written by :func:`save_line_pattern` (learned); ignored by the others.

    Bad arguments (kind, acceleration, centre fraction, a missing ``pattern_file`` argument) raise here; a missing or
    malformed pattern file raises when the factory is called.
    """
    if kind not in _KINDS:
        raise ValueError(f"kind: expected one of {', '.join(_KINDS)}, found '{kind}'")
    if kind == "full":
        return FullLines()
    if kind == "learned":
        if pattern_file is None:
            raise ValueError("pattern_file: expected the .npy of a learned pattern for kind 'learned', found None")
        return LearnedLines(pattern_file)
    if kind == "center":
        return CenterLines(acceleration)
    if kind == "one_sided":
        return OneSidedCenterLines(acceleration)
    if center_fraction is None:
        raise ValueError(f"center_fraction: expected a fraction in (0, 1] for kind '{kind}', found None")
    cls = EquispacedLines if kind == "equispaced" else RandomLines
    return functools.partial(cls(acceleration, center_fraction), seed=seed)


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
        kind: ``"center"``, ``"one_sided"``, ``"equispaced"``, ``"random"``, ``"full"`` or ``"learned"`` (read from
            ``pattern_file``).
        width: number of phase-encoding lines.
        acceleration: undersampling factor; the mask keeps exactly ``width // acceleration`` lines.
        center_fraction: fraction of ``width`` in the centre block (equispaced, random).
        seed: for random and equispaced patterns.
        pattern_file: ``.npy`` written by :func:`save_line_pattern` (learned).
    """
    return line_pattern(kind, acceleration, center_fraction, seed, pattern_file)(width)


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
        raise FileNotFoundError(
            f"{path}: expected a k-space line pattern (.npy), found no such file; a learned pattern is written by the "
            "IGS search (`python -m monai.bundle run --config_file \"['<bundle>/configs/train.json',"
            "'<bundle>/configs/igs_search.json']\"`), or choose a baseline (--pattern center|equispaced|random|full)"
        )
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
