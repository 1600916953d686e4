"""On-site cache of per-slide tile features, so a second run skips extraction.

An entry is a ``.npy`` file named by a hash of the slide's content (sha256 of its bytes, remembered between runs
by ``SlideHashIndex``), the encoder name and
the tiling knobs (tile size, target mpp, max background, stain normalisation, non-brightfield slides allowed,
fallback mpp): a changed slide or
knob is a new entry, never a stale hit. Entries are written atomically (a temporary file renamed into place), so
a killed writer leaves no partial entry, only temporary debris that ``remove_interrupted_writes`` clears. A slide
whose extraction failed gets a small failure entry (``<key>.failed.json``, the error message) instead, so that a
reader can tell a bad slide from one never prepared. The default place is ``<site_dir>/.fedfusion-cache/``, so
features stay at the site with the slides. ``fedfusion site prepare`` (``prepare.py``) is the only writer of
entries; training only reads them.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import numpy.typing as npt

from fedfusion.atomic_io import TEMP_SUFFIX, atomic_write, atomic_write_text
from fedfusion.data.slides.slide_hash_index import SlideHashIndex
from fedfusion.data.slides.tiling import TilingParams

CACHE_DIRNAME = ".fedfusion-cache"
CACHE_FORMAT = "fedfusion-tile-features/1"
SLIDE_HASH_INDEX_FILE = "slide-hashes.json"
FAILURE_SUFFIX = ".failed.json"


class FeatureCache:
    """A directory of cached slide features; counts hits and misses of this instance.

    ``read_only``: this instance writes nothing, not even the slide-hash index (training's view of the cache).
    """

    def __init__(self, cache_dir: Path, *, read_only: bool = False) -> None:
        self.cache_dir = Path(cache_dir)
        self.read_only = read_only
        self.slide_hashes = SlideHashIndex(self.cache_dir / SLIDE_HASH_INDEX_FILE, persist=not read_only)
        self.hits = 0
        self.misses = 0

    def key(self, slide: Path, encoder_name: str, params: TilingParams, fallback_mpp: float | None) -> str:
        """Cache key of a slide's features under these extraction settings."""
        identity = {"format": CACHE_FORMAT, "slide_sha256": self.slide_hashes.sha256(slide), "encoder": encoder_name,
                    "tile_size": params.tile_size, "target_mpp": params.target_mpp,
                    "max_background": params.max_background, "stain_normalization": params.stain_normalization,
                    "fallback_mpp": fallback_mpp}
        if params.allow_non_brightfield:  # only when set: keys made before this knob existed stay valid
            identity["allow_non_brightfield"] = True
        return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()

    def load(self, key: str) -> npt.NDArray[np.float32] | None:
        """The cached features for ``key``, or None (an unreadable entry counts as absent)."""
        path = self._path(key)
        try:
            features: npt.NDArray[np.float32] = np.load(path, allow_pickle=False)
        except (FileNotFoundError, ValueError, OSError, EOFError):
            self.misses += 1
            return None
        self.hits += 1
        return features

    def tiles(self, key: str) -> int | None:
        """The tile count of ``key``'s readable entry (its header only), or None when there is none."""
        try:
            features = np.load(self._path(key), mmap_mode="r", allow_pickle=False)
        except (FileNotFoundError, ValueError, OSError, EOFError):
            return None
        return int(features.shape[0]) if features.ndim == 2 else None

    def store(self, key: str, features: npt.NDArray[np.float32]) -> None:
        """Write ``features`` for ``key`` atomically (and drop an earlier failure entry of that key)."""
        self._writable()
        atomic_write(self._path(key), lambda tmp: _save_npy(tmp, features))
        self._failure_path(key).unlink(missing_ok=True)

    def store_failure(self, key: str, message: str) -> None:
        """Record atomically that extracting ``key`` failed with ``message`` (a ``SlideError`` naming the slide)."""
        self._writable()
        atomic_write_text(self._failure_path(key), json.dumps({"format": CACHE_FORMAT, "error": message}))

    def failure(self, key: str) -> str | None:
        """The message of ``key``'s failure entry, or None (an unreadable failure entry counts as absent)."""
        try:
            entry = json.loads(self._failure_path(key).read_text(encoding="utf-8"))
        except (FileNotFoundError, OSError, ValueError):
            return None
        error = entry.get("error") if isinstance(entry, dict) else None
        return error if isinstance(error, str) else None

    def remove_interrupted_writes(self) -> int:
        """Delete temporary files a killed writer left; return how many.

        Call it only while no other writer runs (``prepare.py`` holds the cache's lock; readers never write).
        """
        self._writable()
        removed = 0
        for debris in self.cache_dir.glob(f"*{TEMP_SUFFIX}"):
            debris.unlink(missing_ok=True)
            removed += 1
        return removed

    def _writable(self) -> None:
        if self.read_only:
            raise RuntimeError(f"feature cache {self.cache_dir} was opened read-only")

    def _path(self, key: str) -> Path:
        return self.cache_dir / f"{key}.npy"

    def _failure_path(self, key: str) -> Path:
        return self.cache_dir / f"{key}{FAILURE_SUFFIX}"


def _save_npy(path: Path, features: npt.NDArray[np.float32]) -> None:
    with open(path, "wb") as handle:  # a file handle, so numpy does not append ".npy" to the temp name
        np.save(handle, np.ascontiguousarray(features, dtype=np.float32), allow_pickle=False)
