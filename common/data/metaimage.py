"""MetaImage (``.mhd`` header + ``.raw`` data, as CSI 2014 is distributed): reading, writing, and a MONAI
``ImageReader`` so that ``LoadImaged(reader=MetaImageReader())`` reads them without ITK.

The header keys read are ``NDims``, ``DimSize``, ``ElementType``, ``ElementDataFile``, ``ElementSpacing`` (or
``ElementSize``), ``Offset`` (or ``Position``), ``TransformMatrix`` (or ``Rotation``), ``BinaryDataByteOrderMSB`` /
``ElementByteOrderMSB``, ``HeaderSize`` and ``CompressedData`` (zlib). MetaImage stores x fastest and its physical
frame is LPS; the array returned is indexed ``[x, y, z]`` and the affine maps voxel indices to RAS millimetres (as
NIfTI affines in MONAI).
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from monai.data import ImageReader
from monai.utils import MetaKeys, SpaceKeys

from common.utils.atomic_io import atomic_path

__all__ = ["METAIMAGE_TYPES", "read_mhd_header", "read_mhd", "write_mhd", "MetaImageReader"]

METAIMAGE_TYPES = {
    "MET_CHAR": np.int8,
    "MET_UCHAR": np.uint8,
    "MET_SHORT": np.int16,
    "MET_USHORT": np.uint16,
    "MET_INT": np.int32,
    "MET_UINT": np.uint32,
    "MET_LONG": np.int64,
    "MET_ULONG": np.uint64,
    "MET_FLOAT": np.float32,
    "MET_DOUBLE": np.float64,
}
_TYPE_NAMES = {np.dtype(v): k for k, v in METAIMAGE_TYPES.items()}


def read_mhd_header(path: str | Path) -> dict[str, str]:
    """The ``key = value`` lines of a ``.mhd`` header. Raises ``ValueError`` naming the file for a line without ``=``
    or a header missing ``DimSize``, ``ElementType`` or ``ElementDataFile``."""
    path = Path(path)
    header: dict[str, str] = {}
    for n, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
        if not line.strip():
            continue
        if "=" not in line:
            raise ValueError(f"{path}: expected 'key = value' MetaImage header lines, found line {n}: {line[:60]!r}")
        key, value = line.split("=", 1)
        header[key.strip()] = value.strip()
    missing = [k for k in ("DimSize", "ElementType", "ElementDataFile") if k not in header]
    if missing:
        raise ValueError(f"{path}: expected a MetaImage header with {missing}, found keys {sorted(header)}")
    return header


def _floats(header: dict[str, str], keys: Sequence[str], default: Sequence[float]) -> np.ndarray:
    for k in keys:
        if k in header:
            return np.array([float(v) for v in header[k].split()])
    return np.asarray(default, dtype=float)


def read_mhd(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Read a ``.mhd``/``.raw`` pair: ``(array [x, y, z], affine (4, 4) voxel -> RAS mm)``.

    Raises ``ValueError`` naming the file for an unknown element type, a missing data file, or a data file whose size
    is not the header's ``DimSize`` x element size.
    """
    path = Path(path)
    h = read_mhd_header(path)
    shape = [int(v) for v in h["DimSize"].split()]
    if h["ElementType"] not in METAIMAGE_TYPES:
        raise ValueError(f"{path}: expected ElementType in {sorted(METAIMAGE_TYPES)}, found {h['ElementType']!r}")
    dtype = np.dtype(METAIMAGE_TYPES[h["ElementType"]])
    msb = (h.get("BinaryDataByteOrderMSB") or h.get("ElementByteOrderMSB") or "False").lower() == "true"
    dtype = dtype.newbyteorder(">" if msb else "<")
    data_file = h["ElementDataFile"]
    if data_file.upper() == "LOCAL":
        raw = path.read_bytes()
        offset = len(raw) - int(np.prod(shape)) * dtype.itemsize if "HeaderSize" not in h else int(h["HeaderSize"])
    else:
        raw_path = path.parent / data_file
        if not raw_path.is_file():
            raise ValueError(f"{path}: expected its data file {raw_path}, found no file")
        raw = raw_path.read_bytes()
        offset = int(h.get("HeaderSize", 0))
    raw = raw[max(offset, 0) :]
    if h.get("CompressedData", "False").lower() == "true":
        raw = zlib.decompress(raw)
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(raw) != expected:
        raise ValueError(
            f"{path}: expected {expected} bytes of {h['ElementType']} for DimSize {shape}, found {len(raw)} bytes"
        )
    array = np.frombuffer(raw, dtype=dtype).reshape(shape[::-1]).transpose().astype(dtype.newbyteorder("="))
    ndim = len(shape)
    spacing = _floats(h, ("ElementSpacing", "ElementSize"), [1.0] * ndim)
    origin = _floats(h, ("Offset", "Position", "Origin"), [0.0] * ndim)
    direction = _floats(h, ("TransformMatrix", "Rotation", "Orientation"), np.eye(ndim).ravel()).reshape(ndim, ndim)
    affine = np.eye(ndim + 1)
    affine[:ndim, :ndim] = direction.T * spacing  # MetaImage stores the direction matrix row by row (ITK's order)
    affine[:ndim, ndim] = origin
    if ndim == 3:
        affine = np.diag([-1.0, -1.0, 1.0, 1.0]) @ affine  # LPS -> RAS
    return array, affine


def write_mhd(
    path: str | Path, array: np.ndarray, spacing: Sequence[float], origin: Sequence[float] | None = None
) -> Path:
    """Write ``array [x, y, z]`` as ``<path>`` (header) + ``<stem>.raw`` (little-endian), axis-aligned, with voxel
    size ``spacing`` (mm) and ``origin`` (LPS mm, zeros by default). Both files are written atomically."""
    path = Path(path)
    array = np.asarray(array)
    if array.dtype not in _TYPE_NAMES:
        raise ValueError(
            f"{path}: expected an array of one of {sorted(str(t) for t in _TYPE_NAMES)}, found {array.dtype}"
        )
    origin = [0.0] * array.ndim if origin is None else origin
    raw_name = path.with_suffix(".raw").name
    header = [
        "ObjectType = Image",
        f"NDims = {array.ndim}",
        "BinaryData = True",
        "BinaryDataByteOrderMSB = False",
        "CompressedData = False",
        f"TransformMatrix = {' '.join(str(float(v)) for v in np.eye(array.ndim).ravel())}",
        f"Offset = {' '.join(str(float(v)) for v in origin)}",
        f"ElementSpacing = {' '.join(str(float(v)) for v in spacing)}",
        f"DimSize = {' '.join(str(s) for s in array.shape)}",
        f"ElementType = {_TYPE_NAMES[array.dtype]}",
        f"ElementDataFile = {raw_name}",
    ]
    with atomic_path(path.parent / raw_name) as tmp:
        np.ascontiguousarray(array.transpose()).astype(array.dtype.newbyteorder("<")).tofile(tmp)
    with atomic_path(path) as tmp:
        Path(tmp).write_text("\n".join(header) + "\n")
    return path


class MetaImageReader(ImageReader):
    """A MONAI image reader of ``.mhd`` files (:func:`read_mhd`), for ``LoadImage(d)(reader=MetaImageReader())``:
    the array ``[x, y, z]`` (no channel) and meta data with the RAS ``affine``."""

    def verify_suffix(self, filename: Sequence[str | os.PathLike] | str | os.PathLike) -> bool:
        names = [filename] if isinstance(filename, (str, os.PathLike)) else filename
        return all(str(f).lower().endswith(".mhd") for f in names)

    def read(
        self, data: Sequence[str | os.PathLike] | str | os.PathLike, **kwargs
    ) -> list[tuple[np.ndarray, np.ndarray]]:
        names = [data] if isinstance(data, (str, os.PathLike)) else data
        return [read_mhd(f) for f in names]

    def get_data(self, img) -> tuple[np.ndarray, dict]:
        array, affine = img[0]
        meta = {
            MetaKeys.AFFINE: affine,
            MetaKeys.ORIGINAL_AFFINE: affine.copy(),
            MetaKeys.SPATIAL_SHAPE: np.asarray(array.shape),
            MetaKeys.ORIGINAL_CHANNEL_DIM: float("nan"),
            MetaKeys.SPACE: SpaceKeys.RAS,
        }
        return array, meta
