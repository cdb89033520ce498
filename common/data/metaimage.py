"""MetaImage (``.mhd`` header + ``.raw`` / ``.zraw`` data, as CSI 2014 is distributed) read and written by ITK, through
MONAI's ``ITKReader`` so that ``LoadImaged(reader=MetaImageReader())`` gives what ``LoadImaged(reader="ITKReader")``
gives: the array indexed ``[x, y, z]`` and the affine mapping voxel indices to RAS millimetres (MetaImage's frame is
LPS; ``TransformMatrix``, ``Offset`` and ``ElementSpacing`` are ITK's own reading).

Two parts are written here, each for what ITK lacks:

- :func:`check_mhd` reads the header's ``key = value`` lines and checks the data file before ITK opens it: ITK reports
  a missing or short data file as "File cannot be read: <header> ... No such file or directory" (the real reason is
  printed by MetaIO on stderr only), so the check gives the error naming the data file or the byte count instead.
- ITK's Python wrapping has no 8-bit signed and no 64-bit signed image type: ``MET_CHAR`` is read as ``int16`` (every
  value kept); ``MET_LONG_LONG`` is refused, naming the type.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from monai.data import ITKReader
from monai.utils import MetaKeys, optional_import

itk, _ = optional_import("itk", allow_namespace_pkg=True)

__all__ = ["METAIMAGE_TYPES", "read_mhd_header", "check_mhd", "read_mhd", "write_mhd", "MetaImageReader"]

METAIMAGE_TYPES = {
    "MET_CHAR": np.int8,
    "MET_UCHAR": np.uint8,
    "MET_SHORT": np.int16,
    "MET_USHORT": np.uint16,
    "MET_INT": np.int32,
    "MET_UINT": np.uint32,
    "MET_LONG": np.int32,
    "MET_ULONG": np.uint32,
    "MET_LONG_LONG": np.int64,
    "MET_ULONG_LONG": np.uint64,
    "MET_FLOAT": np.float32,
    "MET_DOUBLE": np.float64,
}
"""MetaImage ``ElementType`` -> the NumPy type of one voxel on disk (MetaIO's sizes: ``MET_LONG`` and ``MET_ULONG`` are 4
bytes)."""
_WIDENED = {"MET_CHAR": "SS"}  # read as ITK's int16: its Python wrapping has no int8 image
_UNREADABLE = ("MET_LONG_LONG",)  # no int64 image in ITK's Python wrapping, and no wider exact type
_WRITABLE = tuple(np.dtype(t) for t in (np.uint8, np.int16, np.uint16, np.int32, np.uint32, np.float32, np.float64))


def read_mhd_header(path: str | Path) -> dict[str, str]:
    """The ``key = value`` lines of a ``.mhd`` header. Raises ``ValueError`` naming the file for a line without ``=``
    or a header missing ``DimSize``, ``ElementType`` or ``ElementDataFile``."""
    path = Path(path)
    header: dict[str, str] = {}
    with open(path, "rb") as f:  # the header only: with ElementDataFile = LOCAL the voxels follow it in this file
        for n, raw in enumerate(f, 1):
            line = raw.decode(errors="replace").strip()
            if not line:
                continue
            if "=" not in line:
                raise ValueError(
                    f"{path}: expected 'key = value' MetaImage header lines, found line {n}: {line[:60]!r}"
                )
            key, value = (s.strip() for s in line.split("=", 1))
            header[key] = value
            if key == "ElementDataFile":  # the last header line
                break
    missing = [k for k in ("DimSize", "ElementType", "ElementDataFile") if k not in header]
    if missing:
        raise ValueError(f"{path}: expected a MetaImage header with {missing}, found keys {sorted(header)}")
    return header


def check_mhd(path: str | Path) -> dict[str, str]:
    """The header of ``path`` (:func:`read_mhd_header`) after the checks ITK's reader reports unclearly. Raises
    ``ValueError`` naming the file for: an ``ElementType`` not in :data:`METAIMAGE_TYPES` or one ITK cannot read
    (``MET_LONG_LONG``); a missing data file; an uncompressed data file whose size is not ``DimSize`` x the element
    size (after ``HeaderSize`` bytes; at least that with ``HeaderSize = -1``, which reads the data from the end)."""
    path = Path(path)
    h = read_mhd_header(path)
    element = h["ElementType"]
    if element not in METAIMAGE_TYPES or element in _UNREADABLE:
        readable = sorted(set(METAIMAGE_TYPES) - set(_UNREADABLE))
        raise ValueError(f"{path}: expected an ElementType ITK reads, one of {readable}, found {element!r}")
    if h["ElementDataFile"].upper() == "LOCAL":
        return h
    data = path.parent / h["ElementDataFile"]
    if not data.is_file():
        raise ValueError(f"{path}: expected its data file {data}, found no file")
    if h.get("CompressedData", "False").lower() != "true":
        shape = [int(v) for v in h["DimSize"].split()]
        expected = int(np.prod(shape)) * np.dtype(METAIMAGE_TYPES[element]).itemsize
        skip = int(h.get("HeaderSize", 0))
        found = data.stat().st_size - max(skip, 0)
        if found < expected or (found > expected and skip != -1):
            raise ValueError(f"{path}: expected {expected} bytes of {element} for DimSize {shape}, found {found} bytes")
    return h


def read_mhd(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Read a ``.mhd`` with :class:`MetaImageReader`: ``(array [x, y, z] in the file's element type, affine (4, 4)
    voxel -> RAS mm)``. Raises ``ValueError`` naming the file for what :func:`check_mhd` refuses."""
    reader = MetaImageReader()
    array, meta = reader.get_data(reader.read(path))
    return array, np.asarray(meta[MetaKeys.AFFINE], dtype=np.float64)


def write_mhd(
    path: str | Path, array: np.ndarray, spacing: Sequence[float], origin: Sequence[float] | None = None
) -> Path:
    """Write ``array [x, y, z]`` with ITK as ``<path>`` (header) + ``<stem>.raw`` (little-endian, uncompressed),
    axis-aligned, with voxel size ``spacing`` (mm) and ``origin`` (LPS mm, zeros by default). ITK writes both in a
    temporary folder beside ``path``; each then replaces its file in one rename (the data first), so a reader never
    sees half a file. Raises ``ValueError`` naming the file for an element type ITK cannot write."""
    path = Path(path)
    array = np.asarray(array)
    if array.dtype not in _WRITABLE:
        raise ValueError(f"{path}: expected an array of one of {[str(t) for t in _WRITABLE]}, found {array.dtype}")
    image = itk.image_from_array(np.ascontiguousarray(array.transpose()))  # ITK's NumPy view is [z, y, x]
    image.SetSpacing([float(s) for s in spacing])
    image.SetOrigin([float(o) for o in (origin if origin is not None else [0.0] * array.ndim)])
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{path.name}.", dir=path.parent) as tmp:
        itk.imwrite(image, str(Path(tmp) / path.name))
        raw = path.with_suffix(".raw").name
        os.replace(Path(tmp) / raw, path.parent / raw)
        os.replace(Path(tmp) / path.name, path)
    return path


class MetaImageReader(ITKReader):
    """MONAI's ``ITKReader`` for ``.mhd`` files, after :func:`check_mhd` (errors naming the data file or the byte
    count), with ``MET_CHAR`` read as ``int16``: the array ``[x, y, z]`` (no channel) and meta data with the RAS
    ``affine``, as ``ITKReader`` gives them."""

    def verify_suffix(self, filename: Sequence[str | os.PathLike] | str | os.PathLike) -> bool:
        names = [filename] if isinstance(filename, (str, os.PathLike)) else filename
        return all(str(f).lower().endswith(".mhd") for f in names)

    def read(self, data: Sequence[str | os.PathLike] | str | os.PathLike, **kwargs):
        names = [data] if isinstance(data, (str, os.PathLike)) else data
        images = []
        for name in names:
            element = check_mhd(name)["ElementType"]
            pixel = {"pixel_type": getattr(itk, _WIDENED[element])} if element in _WIDENED else {}
            images.append(super().read(name, **pixel, **kwargs))
        return images if len(images) > 1 else images[0]
