"""The one error a loader raises for every problem it found in a data set's layout or headers at once."""

from __future__ import annotations

from pathlib import Path
from typing import NoReturn

__all__ = ["raise_problems"]


def raise_problems(
    error: type[Exception], root: str | Path, what: str, problems: list[str], hint: str | None = None, limit: int = 50
) -> NoReturn:
    """Raise ``error`` naming ``root``, ``what`` was wrong and the count of ``problems``, then the first ``limit`` of
    them one per line (each names its file) and, when given, a ``hint`` on how to fix them."""
    raise error(
        f"{root}: {what} ({len(problems)} problems):\n  "
        + "\n  ".join(problems[:limit])
        + (f"\n  ... and {len(problems) - limit} more" if len(problems) > limit else "")
        + (f"\nHint: {hint}" if hint else "")
    )
