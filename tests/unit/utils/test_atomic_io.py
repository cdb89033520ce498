"""common.utils.atomic_io: one rename on success, the old file and no temporary file on error, umask permissions,
PNG figures."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from matplotlib.figure import Figure

from common.utils import atomic_io
from common.utils.atomic_io import atomic_path, save_figure


def test_replaces_the_file_in_one_rename(tmp_path, monkeypatch):
    path = tmp_path / "sub" / "table.csv"  # missing parent folders are made
    path.parent.mkdir()
    path.write_text("old")
    renames = []
    real = os.replace
    monkeypatch.setattr(atomic_io.os, "replace", lambda a, b: (renames.append((a, b)), real(a, b))[1])
    with atomic_path(path) as tmp:
        assert tmp.parent == path.parent and tmp.name.startswith(".table.csv.")
        tmp.write_text("new, half")
        assert path.read_text() == "old"  # a reader sees the old file until the rename
        tmp.write_text("new")
    assert path.read_text() == "new"
    assert [(Path(a), Path(b)) for a, b in renames] == [(tmp, path)]
    assert sorted(p.name for p in path.parent.iterdir()) == ["table.csv"]
    with atomic_path(tmp_path / "a" / "b" / "c.txt") as tmp:
        tmp.write_text("x")
    assert (tmp_path / "a" / "b" / "c.txt").read_text() == "x"


def test_error_removes_the_temporary_file_and_leaves_the_old_one(tmp_path):
    path = tmp_path / "model.pt"
    path.write_bytes(b"old weights")
    with pytest.raises(RuntimeError, match="killed"):
        with atomic_path(path) as tmp:
            tmp.write_bytes(b"half of the new")
            raise RuntimeError("killed")
    assert path.read_bytes() == b"old weights"
    assert [p.name for p in tmp_path.iterdir()] == ["model.pt"]
    with pytest.raises(ValueError):
        with atomic_path(tmp_path / "new.pt") as tmp:
            raise ValueError
    assert [p.name for p in tmp_path.iterdir()] == ["model.pt"]  # no new file either


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_permissions_follow_the_umask(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        with atomic_path(tmp_path / "out.json") as tmp:
            tmp.write_text("{}")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "out.json").stat().st_mode) == mode  # as open() would give, not mkstemp's 0o600


def test_save_figure_writes_a_png(tmp_path):
    fig = Figure(figsize=(2, 2))
    fig.add_subplot().plot([0, 1], [1, 0])
    path = save_figure(fig, tmp_path / "figs" / "dice.png", dpi=50)
    assert path == tmp_path / "figs" / "dice.png"
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 500
    assert [p.name for p in path.parent.iterdir()] == ["dice.png"]
