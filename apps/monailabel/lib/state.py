"""What the DeepIGeoS refinement task keeps between requests: per user and image a :class:`RefinementState` (the label
refinement starts from, the latest label, the clicks so far), held with the loaded images in one :class:`LRUCache`
bounded in entries and in bytes; and the check of the clicks a request sends (:func:`parse_clicks`)."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import torch

from common.apps.deepigeos import RefinementCache, voxel_indices

from .bundles import BadRequest

__all__ = ["Click", "ClickChanges", "LRUCache", "RefinementState", "disjoint", "parse_clicks", "tensor_bytes"]

Click = tuple[int, ...]
"""A clicked voxel: its indices in the input image, ``(i, j, k)``."""


def tensor_bytes(*tensors: torch.Tensor) -> int:
    """The bytes of the distinct tensors among ``tensors`` (one held twice counts once)."""
    distinct = {id(t): t for t in tensors}
    return sum(t.numel() * t.element_size() for t in distinct.values())


class LRUCache:
    """A thread-safe map that keeps at most ``max_entries`` entries and ``max_bytes`` bytes (as declared by
    :meth:`put`): putting an entry evicts the least recently used ones (read or put) until both bounds hold. The entry
    just put always stays, even when it alone is larger than ``max_bytes`` (the request that made it uses it).

    Args:
        max_entries: at least 1.
        max_bytes: at least 1.
    """

    def __init__(self, max_entries: int, max_bytes: int) -> None:
        for name, value in (("max_entries", max_entries), ("max_bytes", max_bytes)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name}: expected an integer >= 1, found {value!r}")
        self.max_entries, self.max_bytes = max_entries, max_bytes
        self._entries: OrderedDict[Hashable, tuple[Any, int]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: Hashable) -> Any | None:
        """The value of ``key`` (now the most recently used), or None."""
        with self._lock:
            if key not in self._entries:
                return None
            self._entries.move_to_end(key)
            return self._entries[key][0]

    def put(self, key: Hashable, value: Any, nbytes: int) -> None:
        """Set ``key`` (the most recently used) to ``value`` of ``nbytes`` bytes, then evict as needed."""
        with self._lock:
            self._drop(key)
            self._entries[key] = (value, nbytes)
            self._bytes += nbytes
            while len(self._entries) > 1 and (len(self._entries) > self.max_entries or self._bytes > self.max_bytes):
                self._drop(next(iter(self._entries)))

    def pop(self, key: Hashable) -> None:
        """Drop ``key`` if present."""
        with self._lock:
            self._drop(key)

    def _drop(self, key: Hashable) -> None:
        if key in self._entries:
            self._bytes -= self._entries.pop(key)[1]

    def stats(self) -> dict[str, int]:
        """``{"entries", "bytes", "max_entries", "max_bytes"}`` now."""
        with self._lock:
            return {
                "entries": len(self._entries),
                "bytes": self._bytes,
                "max_entries": self.max_entries,
                "max_bytes": self.max_bytes,
            }


def parse_clicks(points: Any, name: str, shape: Sequence[int]) -> list[Click]:
    """Check the clicks of request parameter ``name`` (``[[i, j, k], ...]``, voxel indices of an image of spatial
    ``shape``; None: no click) -> the distinct clicks in the order sent. Every index must be a JSON integer (not a
    boolean, not a float such as 1.0) inside the image (:func:`common.apps.deepigeos.voxel_indices`); otherwise
    :class:`BadRequest` naming ``params.<name>``, what was expected and what was found."""
    if points is not None and not isinstance(points, list):  # JSON arrays only (voxel_indices also takes tuples)
        raise BadRequest(f"params.{name}: expected voxel indices [[i, j, k], ...], found {repr(points)[:200]}")
    try:
        checked = voxel_indices(points, f"params.{name}", shape)
    except ValueError as e:
        message = str(e)
        raise BadRequest(message if len(message) <= 400 else f"{message[:400]}...") from e
    return list(dict.fromkeys(tuple(int(v) for v in c) for c in checked))


class ClickChanges(NamedTuple):
    """What a request changed in the clicks so far (:meth:`RefinementState.add`), each in the order sent."""

    foreground: list[Click]
    """The new foreground clicks."""
    background: list[Click]
    """The new background clicks."""
    dropped_foreground: list[Click]
    """The foreground clicks so far that are no longer foreground clicks."""
    dropped_background: list[Click]
    """The background clicks so far that are no longer background clicks."""


@dataclass
class RefinementState:
    """One user's refinement of one image.

    Attributes:
        start: ``(*S)`` uint8, the label refinement starts from (the automatic segmentation, or a label the client
            uploaded).
        origin: where ``start`` came from: ``"automatic"`` or ``"uploaded"``.
        label: ``(*S)`` uint8, the latest label returned.
        foreground, background: the distinct clicks so far, in the order first sent.
        geodesic: what the refinement reuses between this state's steps (the preprocessed image and the geodesic
            maps of the clicks so far: a step computes the maps of its new clicks only while the refinement box stays;
            :class:`~common.apps.deepigeos.RefinementCache`).
    """

    start: torch.Tensor
    origin: str
    label: torch.Tensor
    foreground: list[Click] = field(default_factory=list)
    background: list[Click] = field(default_factory=list)
    geodesic: RefinementCache = field(default_factory=RefinementCache)

    @classmethod
    def starting(cls, start: torch.Tensor, origin: str) -> RefinementState:
        """A state with no click yet: the latest label is ``start``."""
        return cls(start, origin, start)

    @property
    def nbytes(self) -> int:
        """The bytes of ``start`` and ``label`` (once while they are the same tensor) and of :attr:`geodesic`."""
        return tensor_bytes(self.start, self.label) + self.geodesic.nbytes

    def add(self, foreground: Sequence[Click], background: Sequence[Click], every: bool = False) -> ClickChanges:
        """Merge a request's clicks (checked by :func:`disjoint`) into the clicks so far -> what changed: the new
        clicks (those not among the clicks so far of the same kind) and the dropped ones (clicks so far of a kind
        that are no longer clicks of that kind).

        ``every`` False (the default): the request may send all clicks so far or only the new ones, both give the
        same set; a voxel that was a click of the other kind before changes kind (the latest request wins), and
        otherwise a click is dropped only by a reset of the state. ``every`` True: the request sends every click so
        far (3D Slicer sends all its points each time), so a click so far that it does not send was deleted by the
        user and is dropped."""
        old_fg, old_bg = set(self.foreground), set(self.background)
        new_fg = [c for c in foreground if c not in old_fg]
        new_bg = [c for c in background if c not in old_bg]
        if every:
            keep_fg, keep_bg = set(foreground), set(background)
        else:
            keep_fg, keep_bg = old_fg - set(new_bg), old_bg - set(new_fg)
        changes = ClickChanges(
            new_fg,
            new_bg,
            [c for c in self.foreground if c not in keep_fg],
            [c for c in self.background if c not in keep_bg],
        )
        self.foreground = [c for c in self.foreground if c in keep_fg] + new_fg
        self.background = [c for c in self.background if c in keep_bg] + new_bg
        return changes


def disjoint(foreground: Sequence[Click], background: Sequence[Click]) -> None:
    """BadRequest naming the first voxel (in the image's indices) that a request clicks as both foreground and
    background, if any."""
    both = sorted(set(foreground) & set(background))
    if both:
        raise BadRequest(
            "params.foreground, params.background: expected each voxel clicked as foreground or as background, "
            f"found voxel {list(both[0])} of the image in both the foreground and the background clicks"
        )
