"""Decathlon-style datalists shared by the volume loaders: paths relative to the JSON file, and the atomic write that
:func:`monai.data.load_decathlon_datalist` reads back (the folds: :func:`~common.data.fold_of`)."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

from common.utils.atomic_io import atomic_path

__all__ = ["datalist_path", "write_datalist_json"]


def datalist_path(path: str | Path, base_dir: str | Path | None = None) -> str:
    """``path`` made absolute and normalised, or relative to ``base_dir`` when given."""
    full = os.path.normpath(os.path.abspath(path))
    return os.path.relpath(full, os.path.abspath(base_dir)) if base_dir is not None else full


def write_datalist_json(datalist: dict, path: str | Path, data_dirs: Sequence[str | Path | None]) -> Path:
    """Write ``datalist`` (made with paths relative to ``path``'s folder) as JSON at ``path`` atomically; returns it.

    ``path`` may not lie in one of ``data_dirs`` (the scanned folders): ``load_decathlon_datalist`` turns any value
    that names an existing path beside the JSON file into that path, so there every ``case`` id that is also a folder
    name would become that folder's path.
    """
    path = Path(path)
    for d in data_dirs:
        if d is not None and path.parent.resolve() == Path(d).resolve():
            raise ValueError(
                f"{path}: expected a datalist path outside the scanned folder {d}, found one inside it "
                "(load_decathlon_datalist would read each 'case' id naming a folder there as that folder's path); "
                "write it beside that folder or in the output folder"
            )
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(datalist, indent=1) + "\n")
    return path
