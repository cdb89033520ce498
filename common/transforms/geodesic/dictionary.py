"""Dictionary twin of the geodesic-map transform."""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence

from monai.config import KeysCollection, NdarrayOrTensor
from monai.transforms import MapTransform

from common.transforms.geodesic.array import GeodesicMaps

__all__ = ["GeodesicMapsd"]


class GeodesicMapsd(MapTransform):
    """Dictionary twin of :class:`GeodesicMaps`: for each image key, writes ``d[f"{key}_{postfix}"]``.

    Args:
        keys: image keys.    seeds_key: key of the ``(K, *S)`` seed maps.    postfix: suffix of the output key.
        The rest as in :class:`GeodesicMaps`.
    """

    backend = GeodesicMaps.backend

    def __init__(
        self,
        keys: KeysCollection,
        seeds_key: str = "seeds",
        postfix: str = "geodesic",
        spacing: Sequence[float] | None = None,
        lamb: float = 1.0,
        tolerance: float = 1e-3,
        max_iterations: int = 100,
        backend: str = "fastgeodis",
        scale: float | None = 1.0,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.seeds_key = seeds_key
        self.postfix = postfix
        self.op = GeodesicMaps(spacing, lamb, tolerance, max_iterations, backend, scale)

    def __call__(self, data: Mapping[Hashable, NdarrayOrTensor]) -> dict[Hashable, NdarrayOrTensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[f"{key}_{self.postfix}"] = self.op(d[key], d[self.seeds_key])
        return d
