"""The traversal of a whole volume by the iterative FCN (Lessmann et al. 2019), bounded so that it always ends.

The patch slides over the volume (from the top of the spine, the last axis descending, by ``stride``) until the
network predicts more than ``min_voxels`` voxels outside the memory; it then moves to the centre of that prediction
and predicts again until the patch moves by at most ``converge_distance`` voxels along every axis. A converged
prediction is accepted when the network says the vertebra is complete or the prediction touches the volume edge: it is
written into the memory with the next label and the network predicts again at the same place (the next vertebra). A
converged but incomplete prediction is set aside and the slide goes on; when the traversal converges again within
``converge_distance`` of a set-aside position with the same memory (it has come back to that vertebra), the vertebra is
written into the memory flagged incomplete (``complete`` False, ``accepted`` "returned to") instead of being visited
once more. A patch position reached a second time with the same memory is a local cycle (the same input would give the
same output again): the position is recorded and the slide moves on to its next position. The traversal ends when the
slide has passed the whole volume ("no vertebra left") or after ``max_steps`` network evaluations ("step bound"); the
reason is logged and returned.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from monai.inferers import Inferer
from monai.utils.type_conversion import convert_to_dst_type

from common.apps.iterative_fcn.memory import InstanceMemory

__all__ = ["END_REASONS", "Traversal", "traverse", "IterativeInferer"]

logger = logging.getLogger(__name__)

END_REASONS = ("no vertebra left", "step bound")


@dataclass
class Traversal:
    """The outcome of :func:`traverse`: ``labels`` ``(*S)`` int16 (instances 1, 2, ... in the order found), the
    number of network evaluations ``steps``, why it ended (``reason``, one of :data:`END_REASONS`, and ``detail``), the
    accepted ``instances`` (``label``, ``voxels``, patch ``origin``, the completeness head's decision ``complete``,
    ``edge``: touches the volume edge, ``accepted``: "complete" | "edge" | "returned to"), the converged incomplete
    positions set aside (``rejected``), the positions where a local cycle was left (``cycles``), the ``patch_size`` and
    the wall time in seconds."""

    labels: torch.Tensor
    steps: int = 0
    reason: str = ""
    detail: str = ""
    instances: list[dict] = field(default_factory=list)
    rejected: list[tuple[int, ...]] = field(default_factory=list)
    cycles: list[tuple[int, ...]] = field(default_factory=list)
    patch_size: tuple[int, ...] = ()
    seconds: float = 0.0


def _scan_positions(shape: Sequence[int], patch: Sequence[int], stride: Sequence[int]) -> list[tuple[int, ...]]:
    axes = []
    for n, p, s in zip(shape, patch, stride):
        last = n - p
        starts = list(range(0, last + 1, s))
        if starts[-1] != last:
            starts.append(last)
        axes.append(starts)
    axes[-1] = axes[-1][::-1]  # from the top (high z in RAS) down
    return [(x, y, z) for z in axes[2] for y in axes[1] for x in axes[0]]


def traverse(
    predict: Callable[[torch.Tensor], torch.Tensor],
    image: torch.Tensor,
    patch_size: Sequence[int],
    min_voxels: int = 1000,
    threshold: float = 0.5,
    complete_threshold: float = 0.5,
    converge_distance: int = 2,
    max_steps: int = 1000,
    stride: Sequence[int] | None = None,
    pad_value: float = 0.0,
) -> Traversal:
    """Segment every vertebra of ``image`` ``(*S)`` (3D, scaled as in training) one by one.

    Args:
        predict: the network, ``(1, 2, *P)`` (image, memory) -> ``(1, 2, *P)`` logits (segmentation, completeness).
        patch_size: ``P``; the volume is padded with ``pad_value`` at its far end where it is smaller.
        min_voxels: a prediction with at most this many voxels (outside the memory) is empty (1000 in the paper).
        threshold, complete_threshold: on the sigmoid of the segmentation and completeness logits.
        converge_distance: the patch has converged when it moves by at most this many voxels along every axis.
        max_steps: the most network evaluations.
        stride: slide step (``patch_size // 2`` by default).
    """
    start = time.perf_counter()
    if image.ndim != 3 or len(patch_size) != 3:
        raise ValueError(
            f"image, patch_size: expected a 3D volume and 3 sizes, found {tuple(image.shape)}, {patch_size}"
        )
    if max_steps < 1 or min_voxels < 0:
        raise ValueError(f"max_steps >= 1 and min_voxels >= 0 expected, found {max_steps}, {min_voxels}")
    patch = tuple(int(p) for p in patch_size)
    stride = tuple(max(1, p // 2) for p in patch) if stride is None else tuple(int(s) for s in stride)
    shape = tuple(image.shape)
    pad = [m for n, p in zip(reversed(shape), reversed(patch)) for m in (0, max(0, p - n))]
    volume = F.pad(image.float(), pad, value=pad_value)
    padded = tuple(volume.shape)
    memory = InstanceMemory(padded, device=volume.device)
    result = Traversal(labels=memory.labels, patch_size=patch)
    visited: set[tuple[tuple[int, ...], int]] = set()
    set_aside: set[tuple[tuple[int, ...], int]] = set()  # converged incomplete (position, memory count)
    limit = [p - q for p, q in zip(padded, patch)]

    def window(pos: tuple[int, ...]) -> tuple[slice, ...]:
        return tuple(slice(o, o + p) for o, p in zip(pos, patch))

    def touches_edge(mask: torch.Tensor, pos: tuple[int, ...]) -> bool:
        idx = mask.nonzero()
        if idx.numel() == 0:
            return False
        glob = idx + torch.as_tensor(pos, device=idx.device)
        return bool(
            (glob.min(0).values == 0).any()
            or (glob.max(0).values >= torch.as_tensor(shape, device=idx.device) - 1).any()
        )

    def end(reason: str, detail: str) -> Traversal:
        result.reason, result.detail = reason, detail
        return result

    def returned_to(pos: tuple[int, ...]) -> bool:
        return any(
            count == memory.count and max(abs(a - b) for a, b in zip(pos, old)) <= converge_distance
            for old, count in set_aside
        )

    def follow(pos: tuple[int, ...]) -> Traversal | None:
        while True:
            if result.steps >= max_steps:
                return end("step bound", f"{max_steps} network evaluations")
            key = (pos, memory.count)
            if key in visited and key not in set_aside:
                result.cycles.append(pos)
                logger.debug("patch at %s reached twice with %d in memory: moving on", list(pos), memory.count)
                return None  # a local cycle: the slide moves on
            visited.add(key)
            sl = window(pos)
            x = torch.stack([volume[sl], memory.patch(sl)])[None]
            out = predict(x)
            result.steps += 1
            mask = (torch.sigmoid(out[0, 0].float()) > threshold) & (memory.labels[sl] == 0)
            if int(mask.sum()) <= min_voxels:
                return None  # nothing here: back to sliding
            complete = bool(torch.sigmoid(out[0, 1].flatten()[0].float()) > complete_threshold)
            centre = mask.nonzero().float().mean(0) + torch.as_tensor(pos, device=mask.device)
            new = tuple(min(max(int(round(c - p / 2)), 0), lim) for c, p, lim in zip(centre.tolist(), patch, limit))
            if max(abs(a - b) for a, b in zip(new, pos)) > converge_distance:
                pos = new
                continue
            edge = touches_edge(mask, pos)
            accepted = "complete" if complete else "edge" if edge else "returned to" if returned_to(pos) else ""
            if not accepted:
                set_aside.add(key)
                result.rejected.append(pos)
                return None
            label = memory.add(sl, mask)
            result.instances.append(
                {
                    "label": label,
                    "voxels": int(mask.sum()),
                    "origin": list(pos),
                    "complete": complete,
                    "edge": edge,
                    "accepted": accepted,
                }
            )

    for pos in _scan_positions(padded, patch, stride):
        ended = follow(pos)
        if ended is not None:
            break
    else:
        end("no vertebra left", "the slide passed the whole volume")
    result.labels = memory.labels[tuple(slice(0, n) for n in shape)]
    result.seconds = time.perf_counter() - start
    logger.info(
        "traversal ended (%s: %s) after %d steps, %.1f s: %d vertebrae accepted (%d incomplete: %s), %d converged "
        "predictions set aside, %d local cycles left",
        result.reason,
        result.detail,
        result.steps,
        result.seconds,
        len(result.instances),
        sum(not i["complete"] for i in result.instances),
        [i["label"] for i in result.instances if not i["complete"]],
        len(result.rejected),
        len(result.cycles),
    )
    return result


class IterativeInferer(Inferer):
    """:func:`traverse` as a MONAI inferer: ``inputs`` ``(1, 1, *S)`` -> ``(1, 1, *S)`` float instance labels (1, 2,
    ... in the order found), of the input's type (a ``MetaTensor`` keeps its meta data). The last
    :class:`Traversal` is kept in ``last`` (steps, reason, time) and every one is appended to ``history`` (read by the
    evaluation report). Arguments as :func:`traverse`."""

    def __init__(
        self,
        patch_size: Sequence[int],
        min_voxels: int = 1000,
        threshold: float = 0.5,
        complete_threshold: float = 0.5,
        converge_distance: int = 2,
        max_steps: int = 1000,
        stride: Sequence[int] | None = None,
        pad_value: float = 0.0,
    ) -> None:
        super().__init__()
        self.kwargs = dict(
            patch_size=patch_size,
            min_voxels=min_voxels,
            threshold=threshold,
            complete_threshold=complete_threshold,
            converge_distance=converge_distance,
            max_steps=max_steps,
            stride=stride,
            pad_value=pad_value,
        )
        self.history: list[Traversal] = []

    @property
    def last(self) -> Traversal | None:
        return self.history[-1] if self.history else None

    def __call__(self, inputs: torch.Tensor, network: Callable[..., torch.Tensor], *args, **kwargs) -> torch.Tensor:
        if inputs.ndim != 5 or inputs.shape[:2] != (1, 1):
            raise ValueError(f"inputs: expected one volume (1, 1, X, Y, Z), found {tuple(inputs.shape)}")
        with torch.no_grad():
            t = traverse(lambda x: network(x, *args, **kwargs), inputs[0, 0], **self.kwargs)
        self.history.append(t)
        return convert_to_dst_type(t.labels.to(torch.float32)[None, None], inputs, dtype=torch.float32)[0]
