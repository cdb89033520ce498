"""Training samples of the iterative FCN (Lessmann et al. 2019): a patch around vertebra ``k`` with the instance memory
of the vertebrae before ``k`` in traversal order, ``k`` as the target and its completeness label; every fifth sample
empty (memory = every vertebra in the patch, no target)."""

from __future__ import annotations

import zlib
from collections.abc import Hashable, Mapping, Sequence

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform, Randomizable
from monai.utils.type_conversion import convert_to_numpy

from common.apps.iterative_fcn.memory import traversal_order

__all__ = ["crop_padded", "InstanceSampled"]


def crop_padded(array: np.ndarray, origin: Sequence[int], size: Sequence[int], value: float = 0.0) -> np.ndarray:
    """The box ``[origin, origin + size)`` of ``array`` ``(C, *S)``, filled with ``value`` where it leaves the
    array."""
    out = np.full((array.shape[0], *size), value, dtype=array.dtype)
    src, dst = [slice(None)], [slice(None)]
    for o, s, n in zip(origin, size, array.shape[1:]):
        lo, hi = max(o, 0), min(o + s, n)
        if hi <= lo:
            return out
        src.append(slice(lo, hi))
        dst.append(slice(lo - o, hi - o))
    out[tuple(dst)] = array[tuple(src)]
    return out


class InstanceSampled(Randomizable, MapTransform):
    """``num_samples`` training patches from one case (a list of dicts, as MONAI's random croppers return).

    Non-empty sample: vertebra ``k`` drawn uniformly from the label values of the case; the patch is centred on its
    centroid shifted by up to ``jitter * patch_size`` per axis (so it may cut ``k``); memory = the vertebrae before
    ``k`` in :func:`traversal_order`; target = ``k``; completeness = at least ``complete_fraction`` of ``k``'s voxels
    lie in the patch. Empty sample (the ``empty_every``-th, ``2 * empty_every``-th, ... sample this transform draws,
    each data loader worker counting its own): a patch placed as above, memory = every vertebra in it, no target,
    completeness 0.

    Input keys: ``image`` ``(1, *S)`` (scaled), ``label`` ``(1, *S)`` instance labels, ``weight`` ``(1, *S)`` (see
    :class:`common.transforms.BoundaryWeightd`). Output: ``image`` ``(2, *P)`` (image, memory), ``label`` ``(3, *P)``
    (target, weight, completeness repeated over the patch) float32 tensors, and ``vertebra`` (``k``, 0 when empty);
    other keys are copied.

    Args:
        patch_size: ``P``.
        num_samples: patches per call.
        empty_every: every ``empty_every``-th sample is empty (0: none).
        complete_fraction: 0.98 in the paper.
        jitter: largest shift of the patch centre, as a fraction of ``patch_size``.
        order: traversal order of the label values (None: ascending).
        image_pad: image value outside the volume (air after scaling).
        seed: when given, every call draws from a generator seeded by ``seed`` and the case's ``case`` key, and the
            empty-sample count restarts, so a case always gives the same samples (validation).
    """

    def __init__(
        self,
        keys: KeysCollection = ("image", "label", "weight"),
        patch_size: Sequence[int] = (128, 128, 128),
        num_samples: int = 1,
        empty_every: int = 5,
        complete_fraction: float = 0.98,
        jitter: float = 0.25,
        order: Sequence[int] | None = None,
        image_pad: float = 0.0,
        seed: int | None = None,
    ) -> None:
        super().__init__(keys)
        if len(self.keys) != 3:
            raise ValueError(f"keys: expected (image, label, weight), found {self.keys}")
        if num_samples < 1 or empty_every < 0 or not 0 < complete_fraction <= 1 or jitter < 0:
            raise ValueError(
                f"num_samples >= 1, empty_every >= 0, 0 < complete_fraction <= 1, jitter >= 0 expected, found "
                f"{num_samples}, {empty_every}, {complete_fraction}, {jitter}"
            )
        self.patch_size = tuple(int(p) for p in patch_size)
        self.num_samples, self.empty_every = num_samples, empty_every
        self.complete_fraction, self.jitter = complete_fraction, jitter
        self.order = None if order is None else [int(v) for v in order]
        self.image_pad = image_pad
        self.drawn = 0
        self.seed = seed

    def randomize(self, data: object = None) -> None:
        pass

    def _sample(self, image: np.ndarray, label: np.ndarray, weight: np.ndarray, values: list[int]) -> tuple:
        self.drawn += 1
        empty = self.empty_every > 0 and self.drawn % self.empty_every == 0
        k = values[self.R.randint(len(values))]
        target = label[0] == k
        centre = np.argwhere(target).mean(axis=0)
        shift = self.R.uniform(-self.jitter, self.jitter, size=3) * np.asarray(self.patch_size)
        origin = np.round(centre + shift - np.asarray(self.patch_size) / 2).astype(int)
        img = crop_padded(image, origin, self.patch_size, self.image_pad)
        lab = crop_padded(label, origin, self.patch_size, 0)[0]
        w = crop_padded(weight, origin, self.patch_size, 1.0)
        if empty:
            memory, tgt, complete = (lab > 0), np.zeros_like(lab, dtype=bool), 0.0
        else:
            before = values[: values.index(k)]
            memory, tgt = np.isin(lab, before), lab == k
            complete = float(tgt.sum() >= self.complete_fraction * target.sum())
        out_image = np.concatenate([img.astype(np.float32), memory[None].astype(np.float32)])
        out_label = np.stack(
            [tgt.astype(np.float32), w[0].astype(np.float32), np.full(lab.shape, complete, np.float32)]
        )
        return out_image, out_label, 0 if empty else k

    def __call__(self, data: Mapping[Hashable, object]) -> list[dict]:
        d = dict(data)
        if self.seed is not None:
            self.set_random_state(seed=zlib.crc32(f"{self.seed}:{d.get('case', '')}".encode()))
            self.drawn = 0
        ik, lk, wk = self.keys
        image = convert_to_numpy(d[ik], dtype=np.float32)
        label = np.rint(convert_to_numpy(d[lk])).astype(np.int32)
        weight = convert_to_numpy(d[wk], dtype=np.float32)
        values = traversal_order(np.unique(label), self.order)
        if not values:
            raise ValueError(f"{d.get('case', 'case')}: expected at least one vertebra label, found none")
        out = []
        for _ in range(self.num_samples):
            img, lab, k = self._sample(image, label, weight, values)
            s = {key: v for key, v in d.items() if key not in (ik, lk, wk)}
            s.update({ik: torch.from_numpy(img), lk: torch.from_numpy(lab), "vertebra": k})
            out.append(s)
        return out
