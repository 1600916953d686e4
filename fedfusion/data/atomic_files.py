"""Atomic file writes: a reader sees either the old file, no file, or the complete new file.

Every writer of the data path (synthetic cohorts, feature cache) goes through here, so an interrupted run never
leaves a half-written file under its final name.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

TEMP_SUFFIX = ".partial"
"""Suffix of the temporary files; anything ending in it is debris of an interrupted write."""
FILE_MODE = 0o644
"""Mode of the finished files (mkstemp creates 0600)."""


@contextmanager
def atomic_path(final: Path) -> Iterator[Path]:
    """Yield a temporary path next to ``final``; on success it is renamed onto ``final``, on failure removed."""
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{final.name}.", suffix=TEMP_SUFFIX, dir=final.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.chmod(tmp, FILE_MODE)
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)


def write_atomic(final: Path, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp_path)`` and move the result onto ``final`` atomically."""
    with atomic_path(final) as tmp:
        write(tmp)


def write_text_atomic(final: Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``final`` atomically."""
    write_atomic(final, lambda tmp: tmp.write_text(text, encoding="utf-8"))
