"""MetaImage through ITK: on files written here byte by byte (every element type, byte order, compressed .zraw, data in
the header file, header bytes to skip, rotated and permuted directions, offsets, spacings) ITK gives the array written
and the affine the hand-written reader it replaced computed; the synthetic spine reads the same through MONAI's own
ITKReader; bad files are refused naming the file."""

from __future__ import annotations

import zlib

import numpy as np
import pytest
from monai.transforms import LoadImage

from common.data.metaimage import METAIMAGE_TYPES, MetaImageReader, check_mhd, read_mhd, write_mhd
from common.synthetic.spine import write_synthetic_spine


def rotation(a: float, b: float) -> np.ndarray:
    """A direction matrix that is not symmetric (rotations about z then x): a transposed reading shows."""
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    return rz @ rx


def write_by_hand(
    path,
    array: np.ndarray,
    element: str,
    spacing=(0.5, 0.7, 2.0),
    offset=(1.0, 2.0, 3.0),
    direction=np.eye(3),
    msb: bool = False,
    compressed: bool = False,
    local: bool = False,
    header_size: int | None = None,
):
    """A ``.mhd`` as MetaImage specifies it, without ITK: ``TransformMatrix`` row by row, x fastest on disk."""
    data = np.ascontiguousarray(array.transpose()).astype(array.dtype.newbyteorder(">" if msb else "<")).tobytes()
    data = zlib.compress(data) if compressed else data
    lines = [
        "ObjectType = Image",
        "NDims = 3",
        "BinaryData = True",
        f"BinaryDataByteOrderMSB = {msb}",
        f"CompressedData = {compressed}",
        *([f"CompressedDataSize = {len(data)}"] if compressed else []),
        f"TransformMatrix = {' '.join(repr(float(v)) for v in np.ravel(direction))}",
        f"Offset = {' '.join(repr(float(v)) for v in offset)}",
        f"ElementSpacing = {' '.join(repr(float(v)) for v in spacing)}",
        f"DimSize = {' '.join(str(s) for s in array.shape)}",
        f"ElementType = {element}",
        *([f"HeaderSize = {header_size}"] if header_size is not None else []),
    ]
    name = path.with_suffix(".zraw" if compressed else ".raw").name
    text = "\n".join([*lines, f"ElementDataFile = {'LOCAL' if local else name}"]) + "\n"
    if local:
        path.write_bytes(text.encode() + data)
    else:
        path.write_text(text)
        (path.parent / name).write_bytes(b"\x07" * max(header_size or 0, 0) + data)
    return path


def previous_affine(spacing, offset, direction) -> np.ndarray:
    """The hand-written reader's affine (voxel -> RAS mm): direction columns scaled by the spacing, LPS -> RAS."""
    affine = np.eye(4)
    affine[:3, :3] = np.asarray(direction).T * np.asarray(spacing)
    affine[:3, 3] = offset
    return np.diag([-1.0, -1.0, 1.0, 1.0]) @ affine


def voxels(element: str, rng) -> np.ndarray:
    dtype = np.dtype(METAIMAGE_TYPES[element])
    if dtype.kind == "f":
        return rng.normal(0, 500, (5, 4, 3)).astype(dtype)
    info = np.iinfo(dtype)
    return rng.integers(info.min, info.max, (5, 4, 3), dtype=dtype, endpoint=True)  # extremes of the type too


CASES = {
    **{e: {"element": e} for e in METAIMAGE_TYPES if e != "MET_LONG_LONG"},
    "big-endian": {"element": "MET_SHORT", "msb": True},
    "compressed zraw": {"element": "MET_FLOAT", "compressed": True},
    "LOCAL data": {"element": "MET_SHORT", "local": True},
    "HeaderSize 16": {"element": "MET_USHORT", "header_size": 16},
    "HeaderSize -1": {"element": "MET_USHORT", "header_size": -1},
    "rotated": {"element": "MET_SHORT", "direction": rotation(0.3, -0.2), "offset": (-120.5, 33.25, -800.0)},
    "permuted, flipped": {"element": "MET_UCHAR", "direction": [[0, -1, 0], [0, 0, 1], [1, 0, 0]]},
}


@pytest.mark.parametrize("case", CASES)
def test_itk_gives_the_array_and_affine_the_previous_reader_gave(case, tmp_path):
    settings = dict(CASES[case])
    element = settings["element"]
    array = voxels(element, np.random.default_rng(0))
    path = write_by_hand(tmp_path / "x.mhd", array, **settings)
    expected = previous_affine(
        (0.5, 0.7, 2.0), settings.get("offset", (1.0, 2.0, 3.0)), settings.get("direction", np.eye(3))
    )
    found, affine = read_mhd(path)
    np.testing.assert_array_equal(found, array)  # every value, the extremes of the type included
    widened = {"MET_CHAR": np.int16}  # ITK's Python wrapping has no int8 image
    assert found.dtype == widened.get(element, METAIMAGE_TYPES[element])
    np.testing.assert_allclose(affine, expected, rtol=0, atol=1e-12)


def test_synthetic_spine_reads_the_same_through_monai_itk_reader(tmp_path):
    """The spine data as the bundle loads it: MetaImageReader and MONAI's plain ITKReader agree voxel for voxel,
    affine and spacing; the written geometry is the case's spacing with the origin at zero, x fastest on disk."""
    root = write_synthetic_spine(tmp_path, n_training=1, n_testing=1, shape=(12, 10, 16), scale=0.4, seed=0)
    for path in sorted(root.rglob("*.mhd")):
        array, affine = read_mhd(path)
        itk = LoadImage(reader="ITKReader", image_only=True, dtype=None)(str(path))
        np.testing.assert_array_equal(np.asarray(itk), array)
        np.testing.assert_array_equal(itk.affine.numpy(), affine)
        spacing = [float(v) for v in check_mhd(path)["ElementSpacing"].split()]
        np.testing.assert_allclose(affine, np.diag([-spacing[0], -spacing[1], spacing[2], 1.0]), atol=1e-12)
        disk = np.fromfile(path.with_suffix(".raw"), dtype=array.dtype.newbyteorder("<"))
        np.testing.assert_array_equal(disk, array.transpose().ravel())


def test_write_then_read_round_trip(tmp_path):
    a = np.arange(3 * 4 * 5, dtype=np.int16).reshape(3, 4, 5) - 30
    write_mhd(tmp_path / "x.mhd", a, (0.5, 0.7, 2.0), origin=(1.0, 2.0, 3.0))
    b, affine = read_mhd(tmp_path / "x.mhd")
    np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(affine, [[-0.5, 0, 0, -1], [0, -0.7, 0, -2], [0, 0, 2, 3], [0, 0, 0, 1]])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.mhd", "x.raw"]  # no temporary file left
    img = LoadImage(reader=MetaImageReader(), image_only=True, ensure_channel_first=True)(str(tmp_path / "x.mhd"))
    assert img.shape == (1, 3, 4, 5) and np.allclose(img.pixdim, (0.5, 0.7, 2.0))


def test_bad_files_are_refused_naming_the_file(tmp_path):
    path = write_mhd(tmp_path / "x.mhd", np.zeros((2, 2, 2), np.uint8), (1, 1, 1))
    (tmp_path / "x.raw").write_bytes(b"\0" * 5)
    with pytest.raises(ValueError, match=r"x\.mhd: expected 8 bytes of MET_UCHAR for DimSize \[2, 2, 2\], found 5"):
        read_mhd(path)
    (tmp_path / "x.raw").write_bytes(b"\0" * 9)
    with pytest.raises(ValueError, match=r"x\.mhd: expected 8 bytes of MET_UCHAR .*, found 9 bytes"):
        read_mhd(path)
    (tmp_path / "x.raw").unlink()
    with pytest.raises(ValueError, match=rf"x\.mhd: expected its data file {tmp_path / 'x.raw'}, found no file"):
        read_mhd(path)
    wide = write_by_hand(tmp_path / "wide.mhd", np.zeros((2, 2, 2), np.int64), "MET_LONG_LONG")
    with pytest.raises(ValueError, match=r"wide\.mhd: expected an ElementType ITK reads, .* found 'MET_LONG_LONG'"):
        read_mhd(wide)
    (tmp_path / "text.mhd").write_text("NDims = 3\nnot a header line\n")
    with pytest.raises(ValueError, match=r"text\.mhd: expected 'key = value' MetaImage header lines, found line 2"):
        read_mhd(tmp_path / "text.mhd")
    (tmp_path / "keys.mhd").write_text("NDims = 3\nDimSize = 2 2 2\n")
    with pytest.raises(ValueError, match=r"keys\.mhd: expected a MetaImage header with \['ElementType'"):
        read_mhd(tmp_path / "keys.mhd")
    with pytest.raises(ValueError, match=r"y\.mhd: expected an array of one of .*, found int8"):
        write_mhd(tmp_path / "y.mhd", np.zeros((2, 2, 2), np.int8), (1, 1, 1))
