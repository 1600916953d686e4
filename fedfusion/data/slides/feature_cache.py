"""On-site cache of per-slide tile features, so a second run skips extraction.

An entry is a ``.npy`` file named by a hash of the slide's content (sha256 of its bytes, remembered between runs
by ``SlideHashIndex``), the encoder name and
the tiling knobs (tile size, target mpp, max background, stain normalisation, fallback mpp): a changed slide or
knob is a new entry, never a stale hit. Entries are written atomically. The default place is
``<site_dir>/.fedfusion-cache/``, so features stay at the site with the slides.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import numpy.typing as npt

from fedfusion.atomic_io import atomic_write
from fedfusion.data.slides.slide_hash_index import SlideHashIndex
from fedfusion.data.slides.tiling import TilingParams

CACHE_DIRNAME = ".fedfusion-cache"
CACHE_FORMAT = "fedfusion-tile-features/1"
SLIDE_HASH_INDEX_FILE = "slide-hashes.json"


class FeatureCache:
    """A directory of cached slide features; counts hits and misses of this instance."""

    def __init__(self, cache_dir: Path) -> None:
        self.cache_dir = Path(cache_dir)
        self.slide_hashes = SlideHashIndex(self.cache_dir / SLIDE_HASH_INDEX_FILE)
        self.hits = 0
        self.misses = 0

    def key(self, slide: Path, encoder_name: str, params: TilingParams, fallback_mpp: float | None) -> str:
        """Cache key of a slide's features under these extraction settings."""
        identity = {"format": CACHE_FORMAT, "slide_sha256": self.slide_hashes.sha256(slide), "encoder": encoder_name,
                    "tile_size": params.tile_size, "target_mpp": params.target_mpp,
                    "max_background": params.max_background, "stain_normalization": params.stain_normalization,
                    "fallback_mpp": fallback_mpp}
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

    def store(self, key: str, features: npt.NDArray[np.float32]) -> None:
        """Write ``features`` for ``key`` atomically."""
        atomic_write(self._path(key), lambda tmp: _save_npy(tmp, features))

    def _path(self, key: str) -> Path:
        return self.cache_dir / f"{key}.npy"


def _save_npy(path: Path, features: npt.NDArray[np.float32]) -> None:
    with open(path, "wb") as handle:  # a file handle, so numpy does not append ".npy" to the temp name
        np.save(handle, np.ascontiguousarray(features, dtype=np.float32), allow_pickle=False)
