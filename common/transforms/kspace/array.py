"""Array transforms: acquire an image as if with a given k-space pattern, under a forward model."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from monai.config import NdarrayOrTensor
from monai.transforms import RandomizableTransform, Transform
from monai.utils import TransformBackends
from monai.utils.type_conversion import convert_to_dst_type, convert_to_tensor

from common.transforms.kspace.functional import (
    broadcast_mask,
    check_pe_dim,
    undersample,
)
from common.transforms.kspace.masks import LearnedLines, MaskFactory, line_pattern
from common.transforms.kspace.phase import apply_phase, check_forward_model, smooth_phase

__all__ = ["KSpaceUndersample", "RandKSpaceUndersample"]


class KSpaceUndersample(Transform):
    """Acquire an image as if with the given k-space pattern: the magnitude of the zero-filled reconstruction,
    ``|ifft2c(fft2c(x) * m)|``, under one of two forward models (what ``x`` is).

    Args:
        mask: line weights ``(L,)`` / ``(C, L)``, or a 2D point mask with ``point=True``; or a mask factory
            ``width -> (width,)`` line mask (the classes of :mod:`common.transforms.kspace.masks`, what
            :func:`~common.transforms.kspace.masks.line_pattern` returns), called on every image with its width
            along ``pe_dim``; a path to a ``.npy`` pattern from :func:`save_line_pattern` is read on every call
            (:class:`~common.transforms.kspace.masks.LearnedLines`), so a missing file raises when an image comes,
            not when the transform is made. A learned pattern (a path or a ``LearnedLines``) is checked against
            ``forward_model``: its JSON sidecar must name it, or the call raises ``ValueError`` naming both.
        pe_dim: -1 (lines index W) or -2 (lines index H) of the in-plane axes.
        point: whether ``mask`` is a 2D point mask (a tensor then, not a factory).
        forward_model: ``"magnitude"`` (``x`` is the image itself, so its k-space is conjugate-symmetric: the IGS
            paper's setting) or ``"phase"`` (``x`` is the image times ``exp(i phi)``, ``phi`` a smooth phase map
            :func:`~common.transforms.smooth_phase` ``(H, W, seed, max_phase)`` per 2D slice, shared by its
            channels: as :func:`~common.apps.igs.cache_line_spectra` builds the k-space the IGS search and LOUPE learn
            their patterns on). Full sampling gives the image back under both.
        phase_seed: the seed of the phase map of a ``(C, H, W)`` image; slice ``d`` of a stack ``(C, H, W, D)`` gets
            ``phase_seed + d``. Fixed per transform, so an image is acquired the same way in every run (the same
            phase maps for every image); the :func:`~common.transforms.phase_seed` of a slice's
            :func:`~common.apps.igs.slice_key` and the search's seed base gives the phase the search saw for that
            slice. Unused by ``"magnitude"``.
        max_phase: peak of the phase maps in radians (the search's default, pi). Unused by ``"magnitude"``.

    Shapes: ``img`` ``(C, H, W)`` or a stack of slices ``(C, H, W, D)`` (each slice ``[..., d]`` undersampled
    in-plane) -> float32 of the same shape and type (MetaTensor meta kept), on ``img.device``. A factory's mask is
    built per call and not kept on the object.
    """

    backend = [TransformBackends.TORCH, TransformBackends.NUMPY]

    def __init__(
        self,
        mask: NdarrayOrTensor | MaskFactory | str | Path,
        pe_dim: int = -1,
        point: bool = False,
        forward_model: str = "magnitude",
        phase_seed: int = 0,
        max_phase: float = math.pi,
    ) -> None:
        self.pe_dim = check_pe_dim(pe_dim)
        self.point = point
        self.forward_model = check_forward_model(forward_model)
        if phase_seed < 0:
            raise ValueError(f"phase_seed: expected a seed >= 0, found {phase_seed}")
        self.phase_seed, self.max_phase = int(phase_seed), float(max_phase)
        if isinstance(mask, LearnedLines):
            mask = mask.pattern_file
        if isinstance(mask, (str, Path)):
            mask = LearnedLines(mask, forward_model)  # its sidecar must name the forward model simulated here
        self.mask: torch.Tensor | None = None
        self.mask_factory: MaskFactory | None = None
        if callable(mask) and not isinstance(mask, (torch.Tensor, np.ndarray)):
            if point:
                raise ValueError("mask: expected a 2D point mask tensor with point=True, found a line-mask factory")
            self.mask_factory = mask
        else:
            self.mask = torch.as_tensor(np.asarray(mask) if isinstance(mask, list) else mask, dtype=torch.float32)
            broadcast_mask(self.mask, pe_dim, point)

    def _phase_maps(self, height: int, width: int, depth: int | None = None) -> torch.Tensor:
        """The phase maps of the ``"phase"`` model: float32 ``(H, W)`` for one image, ``(D, 1, H, W)`` for a stack of
        ``depth`` slices (slice ``d`` seeded ``phase_seed + d``)."""
        if depth is None:
            return smooth_phase(height, width, self.phase_seed, self.max_phase)
        maps = [smooth_phase(height, width, self.phase_seed + d, self.max_phase) for d in range(depth)]
        return torch.stack(maps)[:, None]

    def __call__(self, img: NdarrayOrTensor) -> NdarrayOrTensor:
        x = convert_to_tensor(img, dtype=torch.float32, track_meta=False)
        if x.ndim not in (3, 4):
            raise ValueError(f"KSpaceUndersample: expected (C, H, W) or (C, H, W, D), found shape {tuple(x.shape)}")
        size = x.shape[1 + (self.pe_dim == -1)] if not self.point else None
        mask = self.mask
        if self.mask_factory is not None:
            mask = torch.as_tensor(self.mask_factory(size), dtype=torch.float32)  # local: no state kept
            broadcast_mask(mask, self.pe_dim, False)
        if size is not None and mask.shape[-1] != size:
            raise ValueError(
                f"KSpaceUndersample: expected an image {mask.shape[-1]} lines wide along the "
                f"phase-encoding axis, found {size} (image shape {tuple(x.shape)})"
            )
        depth = x.shape[-1] if x.ndim == 4 else None
        if depth is not None:  # (C, H, W, D) -> (D, C, H, W): slices become a batch
            x = x.movedim(-1, 0)
        if self.forward_model == "phase":
            x = apply_phase(x, self._phase_maps(*x.shape[-2:], depth))  # complex (.., C, H, W)
        out = undersample(x, mask, self.pe_dim, self.point)
        if depth is not None:
            out = out.movedim(0, -1)
        return convert_to_dst_type(out.contiguous(), img, dtype=torch.float32)[0]


class RandKSpaceUndersample(RandomizableTransform):
    """With probability ``prob``, acquire a magnitude image with a line pattern drawn afresh per call: an
    acceleration from ``accelerations`` (uniformly), then fastMRI-style random lines at that acceleration (a centre
    block of ``center_fractions[acc]`` of the width plus random outer lines, :func:`line_pattern` ``"random"``) with
    a seed drawn from the transform's generator (``set_random_state``), so runs repeat.

    Trains a network on zero-filled images of many patterns (as the reconstruction U-Net of ``igs_brats``), so that
    no baseline it is later compared with is the one it was trained on. Shapes as :class:`KSpaceUndersample`.
    """

    backend = KSpaceUndersample.backend

    def __init__(
        self,
        accelerations: Sequence[float] = (4, 8, 16),
        center_fractions: Mapping[float, float] | None = None,
        pe_dim: int = -1,
        prob: float = 1.0,
    ) -> None:
        RandomizableTransform.__init__(self, prob)
        self.pe_dim = check_pe_dim(pe_dim)
        self.accelerations = [float(a) for a in accelerations]
        fractions = {float(k): float(v) for k, v in (center_fractions or {4: 0.08, 8: 0.04, 16: 0.04}).items()}
        missing = [a for a in self.accelerations if a not in fractions]
        if not self.accelerations or missing:
            raise ValueError(
                f"accelerations, center_fractions: expected a centre fraction for every acceleration, found "
                f"accelerations {list(accelerations)} and fractions for {sorted(fractions)}"
            )
        self.center_fractions = fractions
        self._acceleration, self._seed = self.accelerations[0], 0

    def randomize(self, data: object = None) -> None:
        super().randomize(None)
        self._acceleration = self.accelerations[self.R.randint(len(self.accelerations))]
        self._seed = int(self.R.randint(2**31 - 1))

    def __call__(self, img: NdarrayOrTensor, randomize: bool = True) -> NdarrayOrTensor:
        if randomize:
            self.randomize()
        if not self._do_transform:
            return img
        factory = line_pattern("random", self._acceleration, self.center_fractions[self._acceleration], self._seed)
        return KSpaceUndersample(factory, self.pe_dim)(img)
