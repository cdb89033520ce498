"""Label conversions of a data set's label values to the regions a method segments (BraTS tumour regions), and the
merge of several lesion masks of one scan (ATLAS)."""

from __future__ import annotations

from collections.abc import Sequence
from functools import reduce

import torch
from monai.config import NdarrayOrTensor
from monai.data import MetaTensor
from monai.transforms import Transform
from monai.utils import TransformBackends
from monai.utils.type_conversion import convert_to_dst_type, convert_to_tensor

from common.data.brats import BRATS_REGIONS, LABEL_3_HINT

__all__ = ["ConvertBratsLabels", "ClassesToRegions", "BRATS_NESTED_CLASSES", "MergeLesionMasks"]


class ConvertBratsLabels(Transform):
    """Map a BraTS segmentation (labels 0, 1, 2, 4) to one binary channel per tumour region, refusing other values.

    Args:
        regions: names from :data:`common.data.brats.BRATS_REGIONS`, one output channel each in this order: ``"WT"``
            whole tumour (1, 2, 4), ``"TC"`` tumour core (1, 4), ``"ET"`` enhancing tumour (4). ``("WT",)`` gives the
            whole-tumour mask alone. MONAI's ``ConvertToMultiChannelBasedOnBratsClasses`` order is
            ``("TC", "WT", "ET")``.

    Shapes: ``img`` ``(1, H, W[, D])`` (channel first, as ``LoadImaged(..., ensure_channel_first=True)`` gives) ->
    ``(len(regions), H, W[, D])`` of 0/1 with the type and dtype of ``img`` (a ``MetaTensor`` keeps its meta data).
    Not differentiable (a label map). Any other value (3 as other releases use it, 1.5, NaN, ...) raises
    ``ValueError`` naming the file (``img.meta["filename_or_obj"]``), each value found and its voxel count: a label
    is never dropped or remapped silently.
    """

    backend = [TransformBackends.TORCH, TransformBackends.NUMPY]

    def __init__(self, regions: Sequence[str] = ("WT", "TC", "ET")) -> None:
        regions = tuple(regions)
        if not regions or len(set(regions)) != len(regions) or not set(regions) <= set(BRATS_REGIONS):
            raise ValueError(f"regions: expected distinct names among WT, TC, ET, found {list(regions)}")
        self.regions = regions

    def __call__(self, img: NdarrayOrTensor) -> NdarrayOrTensor:
        name = img.meta.get("filename_or_obj", "label") if isinstance(img, MetaTensor) else "label array"
        x = convert_to_tensor(img, track_meta=False)
        if x.ndim not in (3, 4) or x.shape[0] != 1:
            raise ValueError(f"{name}: expected a one-channel label (1, H, W[, D]), found shape {tuple(x.shape)}")
        is_label = {v: x[0] == v for v in (0, 1, 2, 4)}
        known = reduce(torch.logical_or, is_label.values())
        if not bool(known.all()):
            values, counts = torch.unique(x[0][~known], return_counts=True)
            found = ", ".join(f"{v:g} ({c} voxels)" for v, c in zip(values.tolist()[:8], counts.tolist()))
            raise ValueError(
                f"{name}: expected BraTS labels 0, 1, 2, 4 only, found also {found}"
                + (", ..." if len(values) > 8 else "")
                + (f"; {LABEL_3_HINT}" if bool((values == 3).any()) else "")
            )
        out = torch.stack([reduce(torch.logical_or, (is_label[v] for v in BRATS_REGIONS[r])) for r in self.regions])
        return convert_to_dst_type(out, img)[0]  # the type, dtype and meta data of img


BRATS_NESTED_CLASSES = ("background", "oedema", "non-enhancing core", "enhancing")
"""Mutually exclusive classes of the BraTS regions, in nesting order: class ``k`` is the voxels in exactly ``k`` of WT,
TC, ET (ET in TC in WT), so the class index is the sum of :class:`ConvertBratsLabels`' channels and region ``WT`` /
``TC`` / ``ET`` is ``class >= 1`` / ``>= 2`` / ``== 3``. In BraTS labels: 0, 2, 1, 4."""


class ClassesToRegions(Transform):
    """Map a class-index map to one binary channel per region, a region being a set of classes (regions may overlap).

    Args:
        regions: per output channel, the class indices it unites; e.g. ``((1, 2, 3), (2, 3), (3,))`` gives WT, TC, ET
            from :data:`BRATS_NESTED_CLASSES` indices.

    Shapes: ``img`` ``(1, H, W[, D])`` class indices (integer-valued) -> ``(len(regions), H, W[, D])`` of 0/1 with the
    type and dtype of ``img``. Not differentiable. A one-hot ``(K, H, W[, D])`` input (``K > 1``, as MONAI's
    ``AsDiscreted(to_onehot=K)`` gives) is read as its argmax.
    """

    backend = [TransformBackends.TORCH, TransformBackends.NUMPY]

    def __init__(self, regions: Sequence[Sequence[int]]) -> None:
        regions = tuple(tuple(int(c) for c in r) for r in regions)
        if not regions or any(not r or min(r) < 0 for r in regions):
            raise ValueError(f"regions: expected at least one non-empty set of class indices >= 0, found {regions}")
        self.regions = regions

    def __call__(self, img: NdarrayOrTensor) -> NdarrayOrTensor:
        x = convert_to_tensor(img, track_meta=False)
        if x.ndim not in (3, 4):
            raise ValueError(f"img: expected a class map (1, H, W[, D]) or one-hot (K, H, W[, D]), found {x.shape}")
        classes = x.argmax(0) if x.shape[0] > 1 else x[0].round().long()
        out = torch.stack([torch.isin(classes, torch.as_tensor(r, device=classes.device)) for r in self.regions])
        return convert_to_dst_type(out, img)[0]


class MergeLesionMasks(Transform):
    """Merge the binary lesion masks of one scan (one per channel, e.g. ATLAS R1.2 ``_LesionSmooth_1_stx``,
    ``_LesionSmooth_2_stx``) into one 0/1 mask: a voxel is lesion when any mask marks it.

    Each mask must be binary in one of the two storages found in ATLAS copies: values ``{0, 1}`` or ``{0, 255}``
    (either subset); anything else (partial-volume values, other labels, NaN) raises ``ValueError`` naming the file of
    that channel (``files[k]`` when given, else ``img.meta["filename_or_obj"]``), the values found and their voxel
    counts: a label is never altered silently.

    Shapes: ``img`` ``(n_masks, H, W, D)`` (``LoadImaged`` of a list of files with ``ensure_channel_first=True``) ->
    ``(1, H, W, D)`` of 0/1 with the type and dtype of ``img`` (a ``MetaTensor`` keeps its meta data). Not
    differentiable (a label map).
    """

    backend = [TransformBackends.TORCH, TransformBackends.NUMPY]

    def __call__(self, img: NdarrayOrTensor, files: Sequence[str] | None = None) -> NdarrayOrTensor:
        first = img.meta.get("filename_or_obj", "label") if isinstance(img, MetaTensor) else "label array"
        x = convert_to_tensor(img, track_meta=False)
        if x.ndim != 4 or x.shape[0] < 1:
            raise ValueError(f"{first}: expected lesion masks (n_masks, H, W, D), found shape {tuple(x.shape)}")
        if files is not None and len(files) != x.shape[0]:
            raise ValueError(f"files: expected one file per mask channel ({x.shape[0]}), found {len(files)}")
        merged = torch.zeros_like(x[0], dtype=torch.bool)
        for k in range(x.shape[0]):
            values = torch.unique(x[k])
            allowed = next(
                (
                    a
                    for a in ((0.0, 1.0), (0.0, 255.0))
                    if bool(torch.isin(values, torch.tensor(a, dtype=x.dtype)).all())
                ),
                None,
            )
            if allowed is None:
                name = files[k] if files is not None else (first if x.shape[0] == 1 else f"{first} (mask {k + 1})")
                vals, counts = torch.unique(x[k], return_counts=True)
                found = ", ".join(f"{v:g} ({c} voxels)" for v, c in zip(vals.tolist()[:8], counts.tolist()))
                raise ValueError(
                    f"{name}: expected a binary lesion mask (values 0/1 or 0/255), found {found}"
                    + (f", ... ({len(vals)} values)" if len(vals) > 8 else "")
                )
            merged |= x[k] == allowed[1]
        return convert_to_dst_type(merged[None].to(x.dtype if x.is_floating_point() else torch.uint8), img)[0]
