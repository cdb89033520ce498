"""Dictionary twin of the simulated-click transform."""

from __future__ import annotations

from collections.abc import Hashable, Mapping

import numpy as np
from monai.config import KeysCollection, NdarrayOrTensor
from monai.transforms import MapTransform, Randomizable

from common.transforms.clicks.array import SimulateClicks

__all__ = ["SimulateClicksd"]


class SimulateClicksd(MapTransform, Randomizable):
    """Dictionary twin of :class:`SimulateClicks`.

    Args:
        keys: the prediction key and the ground-truth key, in this order.
        seeds_key: where the ``(2, *S)`` seed maps go.
        points_key: where the clicks go, as ``{"foreground": [[i, j(, k)], ...], "background": [...]}`` (the
            guidance layout of MONAI Label's DeepEdit).
        count_key: where the round's click count goes (an ``int``, foreground and background together), for an
            evaluation to report clicks per round.
        The rest as in :class:`SimulateClicks`. With ``allow_missing_keys``, a sample lacking either key passes
        unchanged.
    """

    backend = SimulateClicks.backend

    def __init__(
        self,
        keys: KeysCollection = ("pred", "label"),
        seeds_key: str = "seeds",
        points_key: str = "clicks",
        count_key: str = "clicks_per_round",
        min_size: int = 30,
        voxels_per_click: int = 100,
        connectivity: int | None = None,
        max_clicks: int | None = 10,
        slice_choice: str = "all_errors",
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        if len(self.keys) != 2:
            raise ValueError(f"keys: expected 2 keys (prediction, ground truth), found {list(self.keys)}")
        self.seeds_key = seeds_key
        self.points_key = points_key
        self.count_key = count_key
        self.op = SimulateClicks(min_size, voxels_per_click, connectivity, max_clicks, slice_choice)

    def set_random_state(self, seed: int | None = None, state: np.random.RandomState | None = None) -> SimulateClicksd:
        super().set_random_state(seed, state)
        self.op.set_random_state(seed, state)
        return self

    def __call__(self, data: Mapping[Hashable, NdarrayOrTensor]) -> dict[Hashable, object]:
        d = dict(data)
        present = list(self.key_iterator(d))
        if len(present) < 2:
            return d
        seeds, fg, bg = self.op(d[present[0]], d[present[1]])
        d[self.seeds_key] = seeds
        d[self.points_key] = {"foreground": fg.tolist(), "background": bg.tolist()}
        d[self.count_key] = len(fg) + len(bg)
        return d
