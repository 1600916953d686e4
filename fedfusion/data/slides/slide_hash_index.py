"""Remembered sha256 of slide files, keyed by resolved path, size and modification time.

The feature cache is addressed by slide content, but hashing a site's archive (often 1-3 GB per slide) on every
run would cost more than loading the cached features. A slide whose path, size and modification time are
unchanged is taken to have unchanged bytes (the trade-off make and rsync make); ``touch`` a slide, or delete
the index file, to force a new hash. The index lives in the site's cache folder and never leaves the site.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from fedfusion.atomic_io import atomic_write_text

HASH_CHUNK_BYTES = 1 << 20


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file's bytes, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(HASH_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


class SlideHashIndex:
    """sha256 of slides, recomputed only when a slide's size or modification time changed."""

    def __init__(self, index_file: Path, *, persist: bool = True) -> None:
        self.index_file = Path(index_file)
        self.persist = persist
        """False: hashes computed are kept in memory only (a reader that must not write, e.g. training)."""
        self.computed = 0
        """How many hashes this instance had to compute (the rest came from the index)."""
        try:
            entries = json.loads(self.index_file.read_text(encoding="utf-8"))
        except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError):
            entries = {}
        # A missing or damaged index only costs re-hashing.
        self._entries: dict[str, dict[str, object]] = entries if isinstance(entries, dict) else {}

    def sha256(self, slide: Path) -> str:
        """The slide's content hash, from the index when its size and mtime match, else computed and saved."""
        path = Path(slide).resolve()
        stat = path.stat()
        entry = self._entries.get(str(path))
        if entry is not None and entry.get("size") == stat.st_size and entry.get("mtime_ns") == stat.st_mtime_ns:
            return str(entry["sha256"])
        digest = file_sha256(path)
        self.computed += 1
        self._entries[str(path)] = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": digest}
        if self.persist:
            atomic_write_text(self.index_file, json.dumps(self._entries, indent=0, sort_keys=True))
        return digest
